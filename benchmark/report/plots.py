"""Seaborn figures for the report, sized for a paper: one column (3.3 in) for the metric
figures, the full width (6.9 in) for the training curves, every font at least 8 pt. Each
function writes the figure as PNG (the markdown report) and PDF (LaTeX) and returns its caption.

The metric figures draw what the tables say (the same means and sample stds, from
`tables.comparison`), one figure per kind of row: realism, reconstruction, and generation's
self-consistency, which is never ranked and so carries no arrows.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmark import files  # noqa: E402
from benchmark.metrics.registry import METRICS  # noqa: E402
from benchmark.records.results import Record  # noqa: E402
from benchmark.report.health import validation_curve  # noqa: E402
from benchmark.report.tables import (  # noqa: E402
    comparison,
    direction_arrow,
    family_flags,
    family_label,
    metric_frame,
    ordered_families,
)

COLUMN_INCHES = 3.3  # one column of a two-column paper
PAGE_INCHES = 6.9  # both columns
FONT_PT = 8
PANEL_INCHES = 1.05  # the height of one row of metric panels
DPI = 200

# kind -> (evaluation set, which metrics, title): the figures under each dataset's tables
FIGURE_KINDS = {
    "realism": ("gen/", lambda m: METRICS[m].realism, "realism of generated samples"),
    "reconstruction": (
        "recon/",
        lambda m: METRICS[m].plotted and not METRICS[m].realism,
        "reconstruction of held-out test images",
    ),
    "self-consistency": (
        "gen/",
        lambda m: METRICS[m].plotted and not METRICS[m].realism,
        "generation's self-consistency (each sample against its own reconstruction; not "
        "realism, never ranked)",
    ),
}


def palette(labels: list[str]) -> dict[str, tuple]:
    """One colour per family present, however many (seaborn cycles past its 10 colours)."""
    return dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))


def _style():
    return plt.rc_context(
        {
            "font.size": FONT_PT,
            "axes.titlesize": FONT_PT,
            "axes.labelsize": FONT_PT,
            "xtick.labelsize": FONT_PT,
            "ytick.labelsize": FONT_PT,
            "legend.fontsize": FONT_PT,
            "figure.titlesize": FONT_PT + 1,
            "pdf.fonttype": 42,  # TrueType in the PDF: text stays text
        }
    )


def _save(figure, path: Path) -> None:
    """`path` (PNG) and the same figure beside it as PDF."""
    for target in (path, path.with_suffix(".pdf")):
        files.write_with(
            target,
            lambda temporary, fmt=target.suffix[1:]: figure.savefig(
                temporary,
                format=fmt,
                dpi=DPI,
                bbox_inches="tight",
                # no creation date or software version: the same records give the same bytes
                metadata={"CreationDate": None} if fmt == "pdf" else {"Software": None},
            ),
        )
    plt.close(figure)


def metric_figure(records: list[Record], dataset: str, kind: str, path: Path) -> str | None:
    """Horizontal bars: each family's mean over seeds with the sample std as an error bar;
    points: every seed. One panel per metric of the kind that has values, two panels a row."""
    prefix, wanted, title = FIGURE_KINDS[kind]
    metrics = [m for m in METRICS if prefix[:-1] in METRICS[m].sets and wanted(m)]
    table = comparison(records, dataset, prefix, metrics)
    frame = metric_frame([r for r in records if r.dataset == dataset])
    shown = [m for m, row in table.items() if any(c.state == "value" for c in row.values())]
    if not shown:
        return None
    families = ordered_families(f for row in table.values() for f, c in row.items())
    # a family that has not learned carries its health marks, as in the tables
    flags = family_flags(records, dataset)
    names = {
        f: family_label(f) + (f" ({','.join(flags[f])})" if f in flags else "") for f in families
    }
    labels = [names[f] for f in families]
    colours = palette(labels)
    columns = 2 if len(shown) > 1 else 1
    rows = math.ceil(len(shown) / columns)
    with _style():
        figure, axes = plt.subplots(
            rows,
            columns,
            figsize=(COLUMN_INCHES, 0.35 + PANEL_INCHES * rows),
            squeeze=False,
            sharey=True,
        )
        for axis, metric in zip(axes.flat, shown, strict=False):
            row = table[metric]
            values = [row[f] for f in families]
            means = [c.mean if c.state == "value" else math.nan for c in values]
            stds = [c.std if c.state == "value" and c.n > 1 else 0 for c in values]
            axis.barh(
                labels,
                means,
                xerr=stds,
                color=[colours[label] for label in labels],
                error_kw={"elinewidth": 0.8, "capsize": 2},
            )
            seeds = frame[frame["key"] == prefix + metric]
            # every seed as a point, spread across the bar in seed order (no random jitter:
            # the same records draw the same figure)
            for row_at, family in enumerate(families):
                values = seeds[seeds["model"] == family].sort_values("seed")["value"].tolist()
                offsets = [(i - (len(values) - 1) / 2) * 0.15 for i in range(len(values))]
                axis.scatter(
                    values,
                    [row_at + o for o in offsets],
                    s=6,
                    color="black",
                    zorder=3,
                    linewidths=0,
                )
            axis.set_ylim(len(families) - 0.5, -0.5)  # the first family on top, as in the tables
            arrow = direction_arrow(prefix, metric)
            axis.set_title(f"{prefix}{metric}" + (f" {arrow}" if arrow else ""))
            axis.set_xlabel("")
            axis.set_ylabel("")
            axis.locator_params(axis="x", nbins=3)
            low = min(0.0, float(seeds["value"].min()) if len(seeds) else 0.0)
            if low == 0:  # bars start at 0; a row of zeros (recall of blobs) keeps a 0..1 axis
                axis.set_xlim(left=0, right=None if axis.get_xlim()[1] > 0 else 1)
        for axis in list(axes.flat)[len(shown) :]:
            axis.set_visible(False)
        figure.suptitle(f"{dataset}: {title.split(' (')[0]}")
        figure.tight_layout(pad=0.3, h_pad=0.6, w_pad=0.6)
        _save(figure, path)
    n_seeds = frame[frame["key"].str.startswith(prefix)].groupby("model")["seed"].nunique().max()
    arrows = (
        "; ↑ higher is better, ↓ lower is better"
        if any(direction_arrow(prefix, m) for m in shown)
        else "; no arrows: never ranked"
    )
    unlearned = "; (i, c, f): not learned, as in the tables" if flags else ""
    return (
        f"{dataset}, {title}: each family's mean over seeds (bar), sample std (error bar) and "
        f"every seed as a point (up to {n_seeds} a family){arrows}{unlearned}. PDF beside it for "
        "LaTeX."
    )


def _curves(records: list[Record], histories: dict) -> tuple[pd.DataFrame, str]:
    """Long frame family, seed, x, curve, value: the per-epoch training and validation
    reconstruction loss of every seed (the curve the health check reads); records without
    epochs (runs read back from a tracker) give their per-step training loss instead."""
    rows = []
    for r in records:
        epochs = (r.training or {}).get("epochs") or []
        validation = validation_curve(r)
        key = "val/recon_loss" if epochs and "val/recon_loss" in epochs[0] else "val/loss"
        train_key = key.replace("val/", "train/")
        for at, entry in enumerate(epochs):
            if isinstance(entry.get(train_key), int | float):
                rows.append((r.model, r.seed, at + 1, "training", float(entry[train_key])))
        rows += [(r.model, r.seed, at + 1, "validation", v) for at, v in enumerate(validation)]
    if rows:
        return pd.DataFrame(rows, columns=["family", "seed", "x", "curve", "value"]), "epoch"
    for (_, model, seed), steps in histories.items():
        if steps is not None and "train/loss" in steps:
            rows += [
                (model, seed, int(s), "training", float(v))
                for s, v in zip(steps["step"], steps["train/loss"], strict=True)
            ]
    return pd.DataFrame(rows, columns=["family", "seed", "x", "curve", "value"]), "step"


def training_curves(records: list[Record], histories: dict, dataset: str, path: Path) -> str | None:
    """One panel per family: every seed's training and validation reconstruction loss, the
    mean over seeds as a line and the seeds' spread (min to max) as a band."""
    ok = [r for r in records if r.dataset == dataset and r.status == "ok"]
    frame, x_name = _curves(ok, {k: v for k, v in histories.items() if k[0] == dataset})
    if frame.empty:
        return None
    families = ordered_families(frame["family"])
    n_seeds = frame.groupby("family")["seed"].nunique().max()
    with _style():
        figure, axes = plt.subplots(
            1,
            len(families),
            figsize=(PAGE_INCHES if len(families) > 1 else COLUMN_INCHES, 2.0),
            squeeze=False,
        )
        for axis, family in zip(axes[0], families, strict=True):
            subset = frame[frame["family"] == family]
            sns.lineplot(
                data=subset,
                x="x",
                y="value",
                hue="curve",
                hue_order=["training", "validation"],
                estimator="mean",
                errorbar=("pi", 100),  # the band: from the lowest seed to the highest
                ax=axis,
                linewidth=1.0,
                legend=axis is axes[0][0],
            )
            axis.set_title(family_label(family))
            axis.set_xlabel(x_name)
            axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            axis.set_ylabel("reconstruction loss" if axis is axes[0][0] else "")
            if (subset["value"] > 0).all():
                axis.set_yscale("log")  # losses fall by decades; plain numbers on the ticks
                plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
                axis.yaxis.set_major_formatter(plain)
                # within a decade the minor ticks are the only labels; across decades, clutter
                decades = subset["value"].max() / subset["value"].min()
                axis.yaxis.set_minor_formatter(
                    plain if decades < 10 else matplotlib.ticker.NullFormatter()
                )
        if axes[0][0].get_legend() is not None:
            axes[0][0].get_legend().set_title(None)
        figure.tight_layout(pad=0.3, w_pad=0.8)
        _save(figure, path)
    return (
        f"{dataset}: each family's own reconstruction loss per {x_name} (up to {n_seeds} seeds a "
        "family: mean line, band from the lowest to the highest seed), on the training set and "
        "on the validation split (the curve the health check reads); scales differ between "
        "families."
    )
