"""summary.tex (booktabs tables per dataset and table of the report, ready for \\input) and
figures.tex (the image grids)."""

from __future__ import annotations

from pathlib import Path

from benchmark import files
from benchmark.config import dataset_slug
from benchmark.metrics.registry import METRICS
from benchmark.records.results import Record
from benchmark.report.tables import (
    SIGNIFICANCE,
    Marks,
    classifiers_used,
    comparison,
    families_of,
    family_label,
    sampler_phrase,
    seeds_phrase,
    table_n,
    table_specs,
)


def escape(text: str) -> str:
    for char, replacement in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
    ):
        text = text.replace(char, replacement)
    return text


def metric_label(metric: str) -> str:
    """`ssim $\\uparrow$`: the metric with its direction, as the plots show it."""
    arrow = r"$\uparrow$" if METRICS[metric].higher_is_better else r"$\downarrow$"
    return f"{escape(metric)} {arrow}"


MARKS = Marks(bold=(r"\textbf{", "}"), tie=r"$^\dagger$", pm=r"$\pm$")


def latex_tables(records: list[Record]) -> str:
    """Requires \\usepackage{booktabs} in the paper; marks as in the markdown report."""
    blocks = [
        "% vaebench summary: mean $\\pm$ sample std over seeds (n in each caption); --- not "
        "applicable, n/a not available; bold: best family (two-sided Welch t-test against the "
        f"runner-up, p < {SIGNIFICANCE}); $^\\dagger$: leaders the seeds cannot separate. "
        "Requires \\usepackage{booktabs}."
    ]
    for dataset in sorted({r.dataset for r in records}):
        families = families_of([r for r in records if r.dataset == dataset])
        for spec in table_specs():
            table = comparison(records, dataset, spec.prefix, list(spec.metrics))
            if not table:
                continue
            n = table_n(table, records, dataset)
            header = " & ".join(["Metric", *[escape(family_label(f)) for f in families]])
            lines = [
                r"\begin{table}[t]",
                r"\centering",
                r"\begin{tabular}{l" + "r" * len(families) + "}",
                r"\toprule",
                header + r" \\",
                r"\midrule",
            ]
            for metric, row in table.items():
                cells = [row[f].text(MARKS, show_n=n is None) for f in families]
                cells = ["---" if c == "—" else c for c in cells]
                lines.append(" & ".join([metric_label(metric), *cells]) + r" \\")
            caption = f"{escape(dataset)}: {escape(spec.title[0].lower() + spec.title[1:])}"
            if spec.prefix == "gen/":
                samplers = sampler_phrase(records, dataset, code=(r"\texttt{", "}"))
                caption += f"; samplers: {samplers}"  # slugs: nothing to escape
            shown = [m for m in table if METRICS[m].switch == "classifier"]
            used = classifiers_used(records, dataset, spec.prefix) if shown else []
            if used:
                accuracies = ", ".join(f"{c.accuracy:.3f}" for c in used)
                names = ", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0]
                caption += (
                    f"; {names} in the features of a classifier trained on the dataset (test "
                    f"accuracy {accuracies})"
                )
            caption += f" (\\texttt{{{spec.prefix}}}); {escape(seeds_phrase(n))}."
            kind = "realism" if spec.metrics and METRICS[spec.metrics[0]].realism else "table"
            label = f"{dataset_slug(dataset)}-{spec.prefix[:-1]}"
            label += "" if spec.prefix == "recon/" else f"-{kind}"
            lines += [
                r"\bottomrule",
                r"\end{tabular}",
                rf"\caption{{{caption}}}",
                rf"\label{{tab:vaebench-{label}}}",
                r"\end{table}",
            ]
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_latex(records: list[Record], path: Path) -> Path:
    files.write_text(path, latex_tables(records))
    return path


def figures_tex(grids: list[dict[str, str]]) -> str:
    """figures.tex: one figure per dataset and family with its sample and reconstruction grids
    (\\includegraphics of the report's images/, relative to the report folder); `grids`: dicts
    of dataset, family, sampler, samples and reconstructions (paths)."""
    blocks = [
        "% vaebench figures: sample and reconstruction grids (first seed). Requires "
        "\\usepackage{graphicx}; paths are relative to the report folder."
    ]
    for grid in grids:
        parts = []
        if grid.get("samples"):
            parts.append(r"\includegraphics[width=0.45\linewidth]{" + grid["samples"] + "}")
        if grid.get("reconstructions"):
            parts.append(r"\includegraphics[width=0.45\linewidth]{" + grid["reconstructions"] + "}")
        if not parts:
            continue
        family = escape(family_label(grid["family"]))
        caption = (
            f"{escape(grid['dataset'])}, {family}: samples from the "
            f"\\texttt{{{escape(grid['sampler'])}}} sampler (left) and rows of 8 test images, "
            "each above its reconstructions (right)."
        )
        label = f"fig:vaebench-{dataset_slug(grid['dataset'])}-{grid['family']}"
        blocks.append(
            "\n".join(
                [
                    r"\begin{figure}[t]",
                    r"\centering",
                    r"\hfill".join(parts),
                    rf"\caption{{{caption}}}",
                    rf"\label{{{label}}}",
                    r"\end{figure}",
                ]
            )
        )
    return "\n\n".join(blocks) + "\n"
