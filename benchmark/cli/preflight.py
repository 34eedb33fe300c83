"""Before the first cell trains: every piece a cell needs after training imports.

A cell trains for minutes, then writes its checkpoint, fits its sampler, computes its metrics,
draws its image grids, and the run ends with the report. A piece of that chain that cannot be
imported (a package missing from a hand-made environment, a torchvision built for another
torch) used to surface only after training, once per cell. Here it is one line and exit 2
before any work.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

from benchmark.cli.lazy_imports import after_training
from benchmark.config import RunConfig
from benchmark.errors import UserInputError
from benchmark.metrics.providers import PROVIDERS


@dataclass(frozen=True)
class Need:
    module: str  # what is imported
    package: str  # what pip installs
    purpose: str  # what a cell needs it for


# every piece a cell needs after training, from the one declaration of lazy imports
ALWAYS = tuple(Need(*piece) for piece in after_training())
GMM = Need("sklearn.mixture", "scikit-learn", "the gmm sampler")


def _provider_needs(provider) -> list[Need]:
    """What a set-level metric provider imports (`providers.PROVIDERS`, its `requires`)."""
    metrics = ", ".join(provider.metric_names("gen") or provider.metric_names("recon"))
    purpose = f"{metrics} (eval.{provider.name})"
    return [Need(module, package, purpose) for module, package in provider.requires]


def needs(cells: Iterable[RunConfig], tracker: tuple[tuple[str, str], ...] = ()) -> list[Need]:
    """What the cells need after training, each piece once, in a fixed order; `tracker`: the
    (module, pip package) pairs the run's tracker plug-in requires."""
    wanted: dict[Need, None] = dict.fromkeys(ALWAYS)
    for module, package in tracker:
        wanted[Need(module, package, "the tracker (--tracker)")] = None
    for cell in cells:
        for provider in PROVIDERS.values():
            if provider.enabled(cell.eval):
                wanted.update(dict.fromkeys(_provider_needs(provider)))
        if cell.eval.sampler == "gmm":
            wanted[GMM] = None
    return list(wanted)


def missing(cells: Iterable[RunConfig], tracker=()) -> list[tuple[Need, str]]:
    """(need, why it does not import) for each piece that fails to import."""
    failures = []
    for need in needs(cells, tracker):
        try:
            importlib.import_module(need.module)
        except Exception as error:  # noqa: BLE001 - a broken install raises anything
            text = str(error).strip().splitlines()
            missing_module = getattr(error, "name", None)
            if missing_module and not missing_module.startswith(need.module.split(".")[0]):
                # a module it imports in turn (seaborn under the report): name that one
                need = Need(need.module, missing_module.split(".")[0], need.purpose)
            failures.append((need, f"{type(error).__name__}: {text[0]}" if text else "broken"))
    return failures


def check_after_training_pieces(cells: Iterable[RunConfig], tracker=()) -> None:
    """Raise UserInputError (one line, exit 2) when a piece is missing; nothing has run yet."""
    failures = missing(cells, tracker)
    if not failures:
        return
    pieces = "; ".join(f"{need.purpose} needs '{need.package}' ({why})" for need, why in failures)
    packages = " ".join(sorted({need.package for need, _ in failures}))
    raise UserInputError(
        f"cannot start: {pieces}. Nothing was trained. Install the project as the README says "
        f"(pip install -e .), or pip install {packages}"
    )


def provision_networks(cells: Iterable[RunConfig], log) -> None:
    """Before any work: fetch the pretrained networks the cells' metrics need and the weights
    cache lacks, as `vaebench prepare` would (one line each). Never stops the run: a network
    that cannot be had makes its metrics n/a, with the reason in the record. Offline
    (`VAEBENCH_OFFLINE=1`) nothing is fetched and nothing is said."""
    from benchmark.data import weights
    from benchmark.metrics.providers import networks_needed

    if weights.offline():
        return
    for network in networks_needed(cell.eval for cell in cells):
        if weights.cached(network):
            continue
        try:
            provided = weights.provide(network, log=log)
        except weights.WeightsUnavailable as error:
            log(f"vaebench: {error}; its metrics will be n/a (`vaebench prepare` says more)")
            continue
        log(f"vaebench: {network.label} from the {provided.route}, into {weights.weights_dir()}")
