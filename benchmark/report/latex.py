"""summary.tex: booktabs tables, one per dataset and evaluation set, ready for \\input."""

from __future__ import annotations

from pathlib import Path

from benchmark import files
from benchmark.config import dataset_slug
from benchmark.report.tables import (
    comparison,
    families_of,
    family_label,
    metrics_in,
    sampler_phrase,
)

SETS = {
    "recon/": "reconstruction of held-out test images",
    "gen/": "generated samples",
}


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


def latex_tables(records: list[dict]) -> str:
    """Requires \\usepackage{booktabs} in the paper; best marked in bold."""
    blocks = [
        "% vaebench summary: mean $\\pm$ sample std (n seeds); --- not applicable, "
        "n/a not available. Requires \\usepackage{booktabs}."
    ]
    for dataset in sorted({r["dataset"] for r in records}):
        families = families_of([r for r in records if r["dataset"] == dataset])
        for prefix, description in SETS.items():
            table = comparison(records, dataset, prefix, metrics_in("main"))
            if not table:
                continue
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
                cells = [row[f].text(bold=(r"\textbf{", "}"), pm=r"$\pm$") for f in families]
                cells = ["---" if c == "—" else c for c in cells]
                lines.append(" & ".join([escape(metric), *cells]) + r" \\")
            if prefix == "gen/":
                samplers = sampler_phrase(records, dataset, code=(r"\texttt{", "}"))
                description += f"; samplers: {escape(samplers)}"
            lines += [
                r"\bottomrule",
                r"\end{tabular}",
                rf"\caption{{{escape(dataset)}: {description} (\texttt{{{prefix}}}).}}",
                rf"\label{{tab:vaebench-{dataset_slug(dataset)}-{prefix[:-1]}}}",
                r"\end{table}",
            ]
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_latex(records: list[dict], path: Path) -> Path:
    files.write_text(path, latex_tables(records))
    return path
