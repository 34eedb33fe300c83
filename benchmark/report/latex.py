"""summary.tex (booktabs tables per dataset and table of the report, ready for \\input) and
figures.tex (the image grids)."""

from __future__ import annotations

from pathlib import Path

from benchmark import files
from benchmark.config import dataset_slug
from benchmark.records.results import Record
from benchmark.report.budget import budget_phrase
from benchmark.report.health import REASONS
from benchmark.report.ranks import (
    NO_VERDICT,
    NOT_LEARNED,
    mean_ranks,
    ranked_rows,
    seeds_can_rank,
)
from benchmark.report.tables import (
    SIGNIFICANCE,
    Marks,
    TableSpec,
    classifiers_used,
    direction_arrow,
    families_of,
    family_flags,
    family_label,
    row_scale,
    seeds_phrase,
    spec_table,
    table_n,
    table_specs,
)

# every character TeX reads as a command, in text mode: a record's strings (dataset, sampler
# and family names, error text) become literal characters, never commands; `^` is escaped, so
# TeX's `^^5c` notation for a backslash cannot be formed either
LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\textasciicircum{}",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "%": r"\%",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    # what the markdown report writes in Unicode, in plain LaTeX (no inputenc needed)
    "–": "--",
    "—": "---",
    "±": r"$\pm$",
    "≥": r"$\geq$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "·": r"$\cdot$",
}


def escape(text: str) -> str:
    """`text` as literal LaTeX text: each special character replaced once (a replacement is
    never escaped again)."""
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def metric_label(prefix: str, metric: str, scale: int = 0) -> str:
    """`ssim $\\uparrow$`: the metric with its direction where it is ranked (its group's rule
    and heading say which set it is of)."""
    arrow = {"↑": r" $\uparrow$", "↓": r" $\downarrow$", "": ""}[direction_arrow(prefix, metric)]
    times = rf" $\times 10^{{{scale}}}$" if scale else ""
    return f"{escape(metric)}{times}{arrow}"


MARKS = Marks(
    bold=(r"\textbf{", "}"), tie=r"$^\dagger$", pm=r"$\pm$", health=(r"$^{\mathrm{", "}}$")
)
GROUP_HEADINGS = {"gen/": "generated samples", "recon/": "reconstructions"}


# every table is set in a box first: one wider than the column (long row labels, many
# families) is scaled down to the column's width instead of running into the margin; the log
# says each table's natural width (`vaebench: table LABEL WIDTH of COLUMN`)
FIT_BOX = r"\ifdefined\vaebenchbox\else\newsavebox{\vaebenchbox}\fi"


def _open_table(columns: int) -> list[str]:
    return [
        r"\begin{table}[t]",
        r"\centering",
        r"\footnotesize",
        r"\setlength{\tabcolsep}{2pt}",
        FIT_BOX,
        r"\sbox{\vaebenchbox}{%",
        r"\begin{tabular}{@{}l" + "r" * columns + "@{}}",
        r"\toprule",
    ]


def _close_table(caption: str, label: str) -> list[str]:
    return [
        r"\bottomrule",
        r"\end{tabular}%",
        "}",
        rf"\typeout{{vaebench: table {label} \the\wd\vaebenchbox\space of \the\columnwidth}}",
        r"\ifdim\wd\vaebenchbox>\columnwidth\resizebox{\columnwidth}{!}{\usebox{\vaebenchbox}}"
        r"\else\usebox{\vaebenchbox}\fi",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\end{table}",
    ]


def _cell_tex(text: str) -> str:
    """A cell as markdown's `Cell.text` wrote it with LaTeX marks, its ± thinly spaced."""
    return "---" if text == "—" else text.replace(r" $\pm$ ", r"\,$\pm$\,")


def _caption(records: list[Record], dataset: str, spec: TableSpec, n: int | None) -> str:
    caption = f"{escape(dataset)}: {escape(spec.title[0].lower() + spec.title[1:])}. "
    caption += escape(seeds_phrase(n)) + ". "
    caption += "Budget: " + escape(budget_phrase(records, dataset, code=("", ""))) + "."
    classifiers = [
        c for prefix in spec.prefixes for c in classifiers_used(records, dataset, prefix)
    ]
    if classifiers:
        accuracies = ", ".join(sorted({f"{c.accuracy:.3f}" for c in classifiers}))
        caption += (
            " cfd, precision and recall in the features of a classifier trained on the dataset "
            f"(test accuracy {accuracies})."
        )
    flags = family_flags(records, dataset)
    if flags:
        legend = "; ".join(
            f"$^{{\\mathrm{{{mark}}}}}$ {text}"
            for mark, text in REASONS.values()
            if any(mark in m for m in flags.values())
        )
        caption += (
            f" A family marked in its header has not learned ({legend}): never bold or $^\\dagger$."
        )
    return caption


def summary_across_datasets(records: list[Record]) -> str | None:
    """The first table: each family's rank per dataset and headline metric, and its mean rank
    (as REPORT.md's summary); one column wide."""
    rows = ranked_rows(records)
    if not seeds_can_rank(rows):
        return None
    families = families_of(records)
    columns = len(families) + 1
    lines = _open_table(len(families)) + [
        " & ".join(["", *[escape(family_label(f)) for f in families]]) + r" \\",
    ]
    for dataset in dict.fromkeys(row.dataset for row in rows):
        lines += [
            r"\midrule",
            rf"\multicolumn{{{columns}}}{{@{{}}l}}{{\emph{{{escape(dataset)}}}}} \\",
        ]
        for row in (r for r in rows if r.dataset == dataset):
            cells = [
                escape(row.text(f, health_marks=("\x00", "\x01")).replace(NOT_LEARNED, "n.l."))
                .replace("\x00", MARKS.health[0])
                .replace("\x01", MARKS.health[1])
                for f in families
            ]
            label = escape(row.prefix) + metric_label(row.prefix, row.metric)
            lines.append(" & ".join([label, *cells]) + r" \\")
    means = mean_ranks(rows, families)
    mean_cells = [
        f"{means[f][0]:.2f} ({means[f][1]})" if f in means else escape(NO_VERDICT) for f in families
    ]
    lines += [r"\midrule", " & ".join([r"mean rank (rows)", *mean_cells]) + r" \\"]
    caption = (
        "VAEGAN, BetaVAE and VQVAE across datasets: each family's rank per dataset and headline "
        "metric (1 = best; = : the seeds cannot separate it from another family of that rank, "
        f"two-sided Welch t-test p $\\geq$ {SIGNIFICANCE}; n.l.: not learned, with its marks, "
        "not ranked; $\\cdot$: no verdict, fewer than two seeds or rankable families or two "
        "feature networks) and its mean rank over the rows that rank it."
    )
    lines += _close_table(caption, "tab:vaebench-summary")
    return "\n".join(lines)


def latex_tables(records: list[Record]) -> str:
    """Requires \\usepackage{booktabs} in the paper; marks as in the markdown report. The
    headline table of each dataset fits one column of a two-column paper."""
    blocks = [
        "% vaebench summary: mean $\\pm$ sample std over seeds (n in each caption); --- not "
        "applicable, n/a not available; bold: best family (two-sided Welch t-test against the "
        f"runner-up, p < {SIGNIFICANCE}); $^\\dagger$: leaders the seeds cannot separate; "
        "$\\uparrow$/$\\downarrow$ on ranked rows only; superscript letters: cells that have "
        "not learned (i still improving, c collapsed, f samples below the realism floor). "
        "Requires \\usepackage{booktabs} and \\usepackage{graphicx}."
    ]
    summary = summary_across_datasets(records)
    if summary:
        blocks.append(summary)
    for dataset in sorted({r.dataset for r in records}):
        families = families_of([r for r in records if r.dataset == dataset])
        for spec in table_specs():
            groups = spec_table(records, dataset, spec)
            if not groups:
                continue
            n = table_n(
                {f"{p}{m}": row for group in groups for p, m, row in group}, records, dataset
            )
            # a family that has not learned carries its marks in its header: every cell of its
            # column is marked, and a mark per cell would not fit one column of a paper
            flags = family_flags(records, dataset)
            header = " & ".join(
                [
                    "",
                    *[
                        escape(family_label(f))
                        + (
                            MARKS.health[0] + "".join(flags[f]) + MARKS.health[1]
                            if f in flags
                            else ""
                        )
                        for f in families
                    ],
                ]
            )
            lines = _open_table(len(families)) + [header + r" \\"]
            for group in groups:
                prefix = group[0][0]
                lines += [
                    r"\midrule",
                    rf"\multicolumn{{{len(families) + 1}}}{{@{{}}l}}{{\emph{{"
                    rf"{GROUP_HEADINGS.get(prefix, prefix)} (\texttt{{{prefix}}})}}}} \\",
                ]
                for _, metric, row in group:
                    scale = row_scale(row)
                    cells = [
                        row[f].text(MARKS, show_n=n is None, scale=scale, flags=False)
                        for f in families
                    ]
                    cells = [_cell_tex(c) for c in cells]
                    label = metric_label(prefix, metric, scale)
                    lines.append(" & ".join([label, *cells]) + r" \\")
            label = f"tab:vaebench-{dataset_slug(dataset)}-{spec.name}"
            lines += _close_table(_caption(records, dataset, spec, n), label)
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_latex(records: list[Record], path: Path) -> Path:
    files.write_text(path, latex_tables(records))
    return path


def _plot_figure(plot: dict[str, str]) -> str:
    """A metric or training figure (its PDF), one column wide or across both."""
    environment = "figure*" if plot.get("wide") else "figure"
    caption = escape(plot["caption"].replace("`", "").replace(" PDF beside it for LaTeX.", ""))
    return "\n".join(
        [
            rf"\begin{{{environment}}}[t]",
            r"\centering",
            r"\includegraphics[width=\linewidth]{" + plot["plot"] + "}",
            rf"\caption{{{caption}}}",
            rf"\label{{fig:vaebench-{plot['plot'].removesuffix('.pdf')}}}",
            rf"\end{{{environment}}}",
        ]
    )


def figures_tex(grids: list[dict[str, str]]) -> str:
    """figures.tex: the metric and training figures (their PDFs) and, per dataset and family,
    one figure with its sample and reconstruction grids (\\includegraphics of the report's
    files, relative to the report folder); `grids`: dicts of plot, caption (and wide) for a
    plot, or of dataset, family, sampler, samples and reconstructions (paths) for the grids."""
    blocks = [
        "% vaebench figures: metric figures, training curves, sample and reconstruction grids "
        "(first seed). Requires \\usepackage{graphicx}; paths are relative to the report folder."
    ]
    for grid in grids:
        if "plot" in grid:
            blocks.append(_plot_figure(grid))
            continue
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
