"""REPORT.md and its companions: PNG plots, summary.tex, summary.csv, image grids.

Built from records only; metrics are never recomputed here.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import pandas as pd

from benchmark import files
from benchmark.config import dataset_slug
from benchmark.metrics.registry import METRICS
from benchmark.models import FAMILIES
from benchmark.records import results
from benchmark.records.claims import exclusive
from benchmark.records.results import Record
from benchmark.report import plots
from benchmark.report.budget import budget_phrase
from benchmark.report.health import REASONS, health
from benchmark.report.latex import figures_tex, write_latex
from benchmark.report.ranks import (
    NO_VERDICT,
    NOT_LEARNED,
    mean_ranks,
    ranked_rows,
    seeds_can_rank,
)
from benchmark.report.sources import ReportInputs, cell_key
from benchmark.report.tables import (
    SIGNIFICANCE,
    TIE_MARK,
    classifiers_used,
    families_of,
    family_flags,
    family_label,
    family_rank,
    ranked_metrics,
    row_label,
    samplers_used,
    seeds_phrase,
    summary_csv,
    summary_table,
    table_specs,
)


def md(text) -> str:
    """A record's string (a dataset or family name, an error, a path) as literal markdown
    text: HTML escaped, so no tag or script reaches a renderer; table pipes and line breaks
    neutralised, so it stays in its cell."""
    return (
        html.escape(str(text), quote=False)
        .replace("|", "\\|")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def _codes(keys: list[str]) -> str:
    return ", ".join(f"`{key}`" for key in keys)


def notes() -> list[str]:
    """The report's notes; what they say of the families comes from the families' own
    display metadata (`Family.latent`, `Family.own_loss`), so a new family needs no edit here."""
    families = sorted(FAMILIES.values(), key=lambda f: (f.column, f.name))
    gaussian = " and ".join(f.label or f.name for f in families if f.latent == "gaussian")
    own_losses = ", ".join(f"{f.label or f.name} {f.own_loss}" for f in families if f.own_loss)
    return [
        "Cells are `mean ± sample std` over seeds (each table says how many). A best family is "
        f"marked only where families are comparable ({_codes(ranked_metrics('all'))}; "
        f"{_codes(ranked_metrics('gaussian'))} only between the Gaussian-latent families, "
        f"{gaussian}; in `gen/` only the realism rows), in the metric's own direction, and "
        "only where the seeds carry it: with at least two seeds per family, **bold** marks the "
        "best mean where a two-sided Welch t-test "
        f"against the runner-up gives p < {SIGNIFICANCE}; otherwise {TIE_MARK} marks the leaders "
        "the test cannot separate (the best mean and every family whose difference from it has "
        f"p ≥ {SIGNIFICANCE}). With one seed nothing is marked. — : the metric does not "
        "apply to the family; n/a : it could not be computed (reason below the table).",
        "Decoder outputs are clamped to [0, 1] before SSIM, GMSD, LPIPS and BCE.",
        "`recon_loss` and `total_loss` are each family's own training objective, on "
        f"family-specific scales ({own_losses}): shown, never ranked. `vq_loss` is pythae's, "
        "a mean over latent elements.",
        "`discriminator_loss`: pythae's documentation calls lower better (\"the discriminator is "
        "fooled\"), but a low value means VAEGAN's discriminator is winning; no winner is picked "
        "on it.",
        "In `gen/`, the pixel metrics compare each generated image with the model's own "
        "reconstruction of it: they measure self-consistency, not realism, and sit in the table "
        "of further rows, without arrows, never marking a best family. The realism verdict is "
        "`gen/cfd`, `gen/precision` and `gen/recall` (in the features of the dataset's own "
        "classifier, on "
        "every machine, for datasets with labels) and `gen/fid` and `gen/kid` (Inception; n/a "
        "where its weights are missing or FID is off). Each `gen/` table names the sampler of "
        "every family.",
        "`cfd` is the Fréchet distance between the penultimate-layer features of a small "
        "classifier trained on the dataset's labelled training split (fixed recipe per image "
        "shape; it never sees generated images; shipped with vaebench for the built-in "
        "datasets, so the same on every machine) for the images and for the test set. `precision` "
        "is the share of samples inside the test set's k-nearest-neighbour manifold (k = 3), "
        "`recall` the share of test images inside the samples' manifold (Kynkäänniemi et al. "
        "2019): blurry or invalid samples lose precision, samples covering few modes lose recall. "
        "A cfd compares only with cfds of the same classifier weights; each dataset's "
        "classifier (recipe, test accuracy, weights' SHA-256) is named under its tables.",
        "`lpips` is LPIPS v0.1 (VGG16 backbone unless a table says otherwise); `lpips`, `fid` and "
        "`kid` name the SHA-256 of the pretrained weights they used under their tables.",
        "`fid` and `kid` use torch-fidelity's Inception-v3 (2048-d pool features) on images "
        "quantised to uint8; grayscale images are replicated to 3 channels, so these FIDs compare "
        "only with FIDs computed the same way.",
    ]


def _sorted(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.dataset, family_rank(r.model), r.seed))


def _unavailable_note(
    records: list[Record], dataset: str, prefix: str, metrics: tuple[str, ...]
) -> list[str]:
    reasons = sorted(
        {
            (key[len(prefix) :], why)
            for r in records
            if r.dataset == dataset
            for key, why in r.unavailable.items()
            if key.startswith(prefix) and key[len(prefix) :] in metrics
        }
    )
    return [f"n/a — `{metric}`: {md(why)}" for metric, why in reasons]


def _classifier_note(records: list[Record], dataset: str, prefix: str) -> list[str]:
    """Which classifier the cfd/precision/recall of this table were measured with: every
    distinct one (cells run on other machines may have trained their own)."""
    used = classifiers_used(records, dataset, prefix)
    if not used:
        return []
    named = "; ".join(
        f"{c.recipe}, test accuracy {c.accuracy:.3f} (floor {c.floor}), weights SHA-256 "
        f"`{c.sha256[:16]}…`"
        + (
            ", shipped with vaebench (the same on every machine)"
            if c.source == "shipped"
            else f", trained on this machine: compare only with cfds from weights "
            f"`{c.sha256[:16]}…`"
        )
        for c in used
    )
    several = " (several: their cfds do not compare, not ranked)" if len(used) > 1 else ""
    return [f"`cfd`, `precision`, `recall`: the dataset's own classifier{several}: {named}"]


# the providers whose pretrained network a record names (`Record.feature_networks`), by metric
NETWORK_METRICS = {"lpips": ("lpips",), "fid": ("fid", "kid")}


def _networks_note(records: list[Record], dataset: str, prefix: str, metrics) -> list[str]:
    """Which pretrained weights this table's LPIPS / FID / KID came from (every distinct one:
    numbers of different weights do not compare)."""
    notes = []
    for provider, names in NETWORK_METRICS.items():
        shown = [name for name in names if name in metrics]
        used = sorted(
            {
                r.feature_networks()[provider]
                for r in records
                if r.dataset == dataset
                and provider in r.feature_networks()
                and any(f"{prefix}{name}" in r.metrics for name in shown)
            }
        )
        if shown and used:
            several = (
                " (several: their numbers do not compare, not ranked)" if len(used) > 1 else ""
            )
            names_text = ", ".join(f"`{name}`" for name in shown)
            notes.append(f"{names_text}: weights {', '.join(f'`{u}`' for u in used)}{several}")
    return notes


def _health_overview(records: list[Record]) -> list[str]:
    """At the top: how many cells have not learned and why (each with its numbers); their
    families are marked in every table and never bold or † on a row they would lead."""
    ok = [r for r in _sorted(records) if r.status == "ok"]
    flagged = [(r, verdict) for r in ok if not (verdict := health(r)).learned]
    if not flagged:
        return [
            f"**Health**: all {len(ok)} finished cells have learned by the rules of "
            "docs/metrics.md (validation loss settled, no collapse, samples above the realism "
            "floor).",
            "",
        ]
    reasons = Counter(flag.reason for _, verdict in flagged for flag in verdict.flags)
    why = ", ".join(
        f"{n} {REASONS[reason][1]} ({REASONS[reason][0]})" for reason, n in reasons.items()
    )
    lines = [
        f"**Health: {len(flagged)} of {len(ok)} finished cells have not learned** ({why}). Their "
        "family carries the marks in every table; no family is bold or † on a row a flagged "
        "family would lead, and the summary does not rank it (rules and thresholds: "
        'docs/metrics.md, "Health").',
        "",
    ]
    lines += [
        f"- {md(r.dataset)} / {md(family_label(r.model))} / seed {r.seed}: "
        + "; ".join(flag.text() for flag in verdict.flags)
        for r, verdict in flagged
    ]
    return lines + [""]


def _summary_across_datasets(records: list[Record]) -> list[str]:
    """The first table: every family's rank per dataset and headline metric, and its mean."""
    rows = ranked_rows(records)
    if not rows:
        return []
    if not seeds_can_rank(rows):
        return [
            "## Summary across datasets",
            "",
            "No family is ranked: every dataset has fewer than two seeds a family (a rank "
            "needs the seeds to carry it).",
            "",
        ]
    families = families_of(records)
    header = ["dataset", "metric", *[family_label(f) for f in families]]
    lines = [
        "## Summary across datasets",
        "",
        "Rank of each family per dataset and headline metric (1 = best; `=`: the seeds cannot "
        f"separate it from another family of that rank, Welch p ≥ {SIGNIFICANCE}; "
        f"`{NOT_LEARNED}`: a family whose cells have not learned is not ranked; "
        f"`{NO_VERDICT}`: no verdict, fewer than two seeds or rankable families). Mean rank: "
        "over the rows that rank the family.",
        "",
        "| " + " | ".join(header) + " |",
        "|:---|:---|" + "---:|" * len(families),
    ]
    for row in rows:
        cells = [row.text(f) for f in families]
        lines.append(
            f"| {md(row.dataset)} | {row_label(row.prefix, row.metric)} | "
            + " | ".join(cells)
            + " |"
        )
    means = mean_ranks(rows, families)
    mean_cells = [
        f"**{means[f][0]:.2f}** (of {means[f][1]})" if f in means else NO_VERDICT for f in families
    ]
    lines.append("| **mean rank** | | " + " | ".join(mean_cells) + " |")
    return lines + [""]


def _markdown_table(frame: pd.DataFrame) -> str:
    """Numbers right-aligned, the metric column left."""
    return frame.to_markdown(
        disable_numparse=True, colalign=("left",) + ("right",) * len(frame.columns)
    )


def _flag_legend(records: list[Record], dataset: str) -> list[str]:
    flags = family_flags(records, dataset)
    if not flags:
        return []
    marks = sorted({m for ms in flags.values() for m in ms})
    legend = "; ".join(
        f"<sup>{mark}</sup> {text}" for reason, (mark, text) in REASONS.items() if mark in marks
    )
    named = ", ".join(f"{family_label(f)} <sup>{','.join(m)}</sup>" for f, m in flags.items())
    return [f"Not learned: {named} ({legend}; the cells at the top): never bold or † here."]


def _section(
    inputs: ReportInputs, dataset: str, out_dir: Path, figures: list[dict[str, str]]
) -> list[str]:
    """The dataset's tables, plots and image grids; its plots (as PDF) and grids are added to
    `figures` (for figures.tex)."""
    records = inputs.records
    lines = [f"## {md(dataset)}", "", f"*Budget: {md(budget_phrase(records, dataset))}.*", ""]
    slug = dataset_slug(dataset)
    for spec in table_specs():
        table, n = summary_table(records, dataset, spec)
        if table.empty:
            continue
        lines += [f"### {spec.title}", ""]
        lines += [
            f"*{seeds_phrase(n)}; ↑ higher is better, ↓ lower is better; rows without an "
            "arrow are shown, never ranked.*",
            "",
            _markdown_table(table),
            "",
        ]
        notes = _flag_legend(records, dataset)
        for prefix, metrics in spec.groups:
            notes += _unavailable_note(records, dataset, prefix, metrics)
            if "cfd" in metrics:
                notes += _classifier_note(records, dataset, prefix)
            notes += _networks_note(records, dataset, prefix, metrics)
        lines += [f"- {note}" for note in dict.fromkeys(notes)] + ([""] if notes else [])
        shown = {label.split(" ")[0].split("/", 1)[1] for label in table.index}
        if any(METRICS[metric].group == "diagnostic" for metric in shown):
            lines += [
                "*Active units: latent dimensions with Cov_x(E_q[z_i]) > 0.01 (posterior "
                "collapse shows as few); codebook usage/perplexity: how much of VQVAE's "
                "codebook is used; discriminator accuracies: how often VAEGAN's discriminator "
                "is right on real and generated images.*",
                "",
            ]
    figure_lines = []
    for kind in plots.FIGURE_KINDS:
        figure = f"{slug}-{kind}.png"
        caption = plots.metric_figure(records, dataset, kind, out_dir / figure)
        if caption:
            figure_lines += [f"![{md(dataset)} {kind}]({figure})", "", f"*{md(caption)}*", ""]
            figures.append({"plot": figure.replace(".png", ".pdf"), "caption": caption})
    if figure_lines:
        lines += ["### Figures", "", *figure_lines]
    ok = [r for r in records if r.dataset == dataset and r.status == "ok"]
    figure = f"{slug}-training.png"
    caption = plots.training_curves(records, inputs.histories, dataset, out_dir / figure)
    if caption:
        figures.append({"plot": figure.replace(".png", ".pdf"), "caption": caption, "wide": "1"})
        lines += [
            "### Training curves",
            "",
            f"![training curves]({figure})",
            "",
            f"*{caption}*",
            "",
        ]
    first_seed = {}
    for record in _sorted(ok):
        first_seed.setdefault(record.model, cell_key(record))
    grid_lines = []
    samplers = samplers_used(records, dataset)
    for model, key in first_seed.items():
        sampler = "/".join(samplers.get(model, []))
        figure_entry = {"dataset": dataset, "family": model, "sampler": sampler}
        for name, source in sorted(inputs.grids.get(key, {}).items()):
            target = out_dir / "images" / f"{slug}-{model}-seed{key[2]}.{name}.png"
            if source.resolve() != target.resolve():
                files.copy_file(source, target, out_dir)
            figure_entry[name] = f"images/{target.name}"
            what = (
                "rows of 8 test images, each above its reconstructions"
                if name == "reconstructions"
                else f"samples, {md(sampler)} sampler"
            )
            grid_lines.append(
                f"| {md(family_label(model))} (seed {key[2]}) | {what} | "
                f"![{md(family_label(model))} {name}, {md(sampler)}](images/{target.name}) |"
            )
        figures.append(figure_entry)
    if grid_lines:
        lines += [
            "### Images (first seed)",
            "",
            "| family | what | image |",
            "|---|---|---|",
            *grid_lines,
            "",
        ]
    return lines


def _code_versions(records: list[Record]) -> list[str]:
    """A mix of code versions behind the numbers (cells re-scored by `vaebench evaluate`, or
    results folders grown over time) is said once, at the top."""
    versions = Counter(
        stamp["code"]
        for r in records
        if r.status == "ok"
        for stamp in (r.provenance or {}).values()
    )
    if len(versions) < 2:
        return []
    mix = ", ".join(f"`{version}` ({n} values)" for version, n in sorted(versions.items()))
    return [
        f"**Mixed code versions**: the metrics here were computed by {len(versions)} versions "
        f"of vaebench: {mix}. Each record's `provenance` says which computed each number.",
        "",
    ]


def _hardware(records: list[Record]) -> list[str]:
    """Records from more than one kind of hardware (float results differ between CPU types and
    GPUs) are said once, at the top, as a mix of code versions is."""
    kinds = Counter(r.environment.hardware_id or "unknown" for r in records)
    if len(kinds) < 2:
        return []
    mix = ", ".join(f"`{kind}` ({n} cells)" for kind, n in sorted(kinds.items()))
    return [
        f"**Mixed hardware**: these records come from {len(kinds)} kinds of hardware: {mix}. "
        "Float results differ between them; the provenance table names each cell's.",
        "",
    ]


def _provenance(records: list[Record]) -> list[str]:
    lines = [
        "## Provenance",
        "",
        "| cell | status | config hash | dataset source | revision / fingerprint | "
        "git sha | device | hardware | train (s) | eval (s) | total (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _sorted(records):
        info, env, t = r.dataset_info, r.environment, r.timings

        def seconds(key: str, timings: dict = t) -> str:
            return f"{timings[key]:.1f}" if key in timings else "-"

        lines.append(
            f"| {md(r.dataset)}-{md(r.model)}-seed{r.seed} | {r.status} | "
            f"{md(r.config_hash or '-')} | {md(info.source or '-')} | "
            f"{md(info.revision or '-')} / {md(info.fingerprint or '-')} | "
            f"{md((env.git_sha or '-')[:12])} | {md(env.device or '-')} | "
            f"{md(env.hardware_id or '-')} | {seconds('train')} | {seconds('eval')} | "
            f"{seconds('total')} |"
        )
    packages = {}
    for r in records:
        for name, version in r.environment.packages.items():
            packages.setdefault(name, set()).add(str(version))
    if packages:
        lines += [
            "",
            "Packages: "
            + ", ".join(
                f"{name} {'/'.join(sorted(versions))}"
                for name, versions in sorted(packages.items())
            ),
        ]
    return lines + [""]


def write_report(inputs: ReportInputs, out_dir: str | Path) -> Path:
    """REPORT.md, its plots and images, summary.csv and summary.tex in `out_dir`. Runners that
    share a folder may finish together: one writes at a time (a lock that dies with its
    process), so no file is written by two at once, and the temporaries a killed writer left
    can be removed without touching a live writer's."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir / ".REPORT.md.lock"):
        return _write_report(inputs, out_dir)


def _write_report(inputs: ReportInputs, out_dir: Path) -> Path:
    records = _sorted(inputs.records)
    suites = sorted({r.suite for r in records})
    ok = sum(r.status == "ok" for r in records)
    lines = [
        "# vaebench report",
        "",
        f"Suites: {', '.join(suites)}. Cells: {len(records)} ({ok} ok, "
        f"{len(records) - ok} failed). Also here: `summary.tex` (booktabs tables), `figures.tex` "
        "(the image grids), `summary.csv`.",
        "",
        *[f"- {note}" for note in notes()],
        "",
    ]
    lines += _code_versions(records)
    lines += _hardware(records)
    if inputs.earlier_configs:
        lines += [
            f"{inputs.earlier_configs} records of earlier configurations of these cells are kept "
            "in `results/*/history/` and are not in these tables; each row's configuration is "
            "the config hash in the provenance table.",
            "",
        ]
    lines += _health_overview(records)
    lines += _summary_across_datasets(records)
    figures: list[dict[str, str]] = []
    for dataset in sorted({r.dataset for r in records}):
        lines += _section(inputs, dataset, out_dir, figures)
    failed = [r for r in records if r.status != "ok"]
    if failed:
        lines += ["## Failed cells", ""]
        lines += [
            f"- {md(r.dataset)} / {md(r.model)} / seed {r.seed}: {md(r.error)}" for r in failed
        ]
        lines += [""]
    lines += _provenance(records)
    path = out_dir / "REPORT.md"
    for name in ("summary.csv", "summary.tex", "figures.tex", "REPORT.md"):  # a killed writer's
        results.remove_stale_temporaries(out_dir / name)
    files.write_text(out_dir / "summary.csv", summary_csv(records).to_csv(index=False))
    write_latex(records, out_dir / "summary.tex")
    files.write_text(out_dir / "figures.tex", figures_tex(figures))
    files.write_text(path, "\n".join(lines) + "\n")
    return path
