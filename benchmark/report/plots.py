"""Seaborn figures for the report. Each function writes one PNG and returns its caption."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmark import files  # noqa: E402
from benchmark.metrics.registry import METRICS  # noqa: E402
from benchmark.records.results import Record  # noqa: E402
from benchmark.report.tables import (  # noqa: E402
    family_label,
    metric_frame,
    ordered_families,
)


def palette(labels: list[str]) -> dict[str, tuple]:
    """One colour per family present, however many (seaborn cycles past its 10 colours)."""
    return dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))


def metric_bars(records: list[Record], dataset: str, prefix: str, path: Path) -> str | None:
    """Bars: mean over seeds per family; points: every seed. Comparable metrics only."""
    frame = metric_frame([r for r in records if r.dataset == dataset])
    plotted = [key for key, info in METRICS.items() if info.plotted]
    frame = frame[frame["key"].isin([prefix + m for m in plotted])].copy()
    if frame.empty:
        return None
    frame["metric"] = frame["key"].str.slice(len(prefix))
    order = [family_label(f) for f in ordered_families(frame["model"])]
    frame["model"] = frame["model"].map(family_label)
    metrics = [m for m in plotted if m in set(frame["metric"])]
    grid = sns.catplot(
        data=frame,
        x="model",
        y="value",
        col="metric",
        col_order=metrics,
        order=order,
        hue="model",
        hue_order=order,
        palette=palette(order),
        kind="bar",
        errorbar=None,
        sharey=False,
        height=2.6,
        aspect=1.05,
        col_wrap=min(len(metrics), 6),
        legend=False,
    )
    for axis, metric in zip(grid.axes.flat, metrics, strict=False):
        subset = frame[frame["metric"] == metric]
        sns.stripplot(
            data=subset,
            x="model",
            y="value",
            order=order,
            color="black",
            size=4,
            jitter=0.15,
            ax=axis,
        )
        arrow = "↑" if METRICS[metric].higher_is_better else "↓"
        axis.set_title(f"{prefix}{metric} {arrow}")
        axis.set_xlabel("")
        axis.tick_params(axis="x", labelsize=8)
        axis.set_ylabel("")
    grid.figure.suptitle(f"{dataset}", y=1.04)
    files.write_with(path, lambda temporary: grid.savefig(temporary, dpi=110, bbox_inches="tight"))
    plt.close(grid.figure)
    n_seeds = frame.groupby("model")["seed"].nunique().max()
    return (
        f"{dataset}, `{prefix}`: mean per family (bars) and each of up to {n_seeds} seeds "
        "(points); ↑ higher is better, ↓ lower is better."
    )


def training_curves(histories: dict[str, pd.DataFrame], dataset: str, path: Path) -> str | None:
    """Loss components over steps, one panel per family (its own components and scales)."""
    histories = {k: v for k, v in histories.items() if v is not None and len(v)}
    if not histories:
        return None
    families = ordered_families(histories)
    figure, axes = plt.subplots(1, len(families), figsize=(4.8 * len(families), 3.4), squeeze=False)
    for axis, family in zip(axes[0], families, strict=True):
        steps = histories[family]
        columns = [c for c in steps.columns if c.startswith("train/") and "update_" not in c]
        long = steps.melt(
            id_vars="step", value_vars=columns, var_name="component", value_name="loss"
        )
        long["component"] = long["component"].str.slice(len("train/"))
        window = max(1, len(steps) // 100)  # smooth per-step noise for readability
        long["loss"] = (
            long.groupby("component")["loss"]
            .rolling(window, min_periods=1)
            .mean()
            .reset_index(level=0, drop=True)
        )
        sns.lineplot(data=long, x="step", y="loss", hue="component", ax=axis, linewidth=1.2)
        axis.set_title(family_label(family))
        axis.set_yscale("symlog", linthresh=1.0)  # losses span decades; VAEGAN's can be < 0
        axis.set_ylim(bottom=min(0.0, float(long["loss"].min()) * 1.1))
        axis.legend(fontsize=7)
    figure.suptitle(f"{dataset}: training loss components (first seed)", y=1.02)
    figure.tight_layout()
    files.write_with(
        path, lambda temporary: figure.savefig(temporary, dpi=110, bbox_inches="tight")
    )
    plt.close(figure)
    return (
        f"{dataset}: per-step training loss components of each family (first seed, rolling "
        "mean), as pythae names them; scales differ between families."
    )
