"""Has a cell's model learned? A health verdict from what its record already holds, so that the
report ranks only models that have (docs/metrics.md, "Health"; ../shared/spec/METRICS.md).

Three checks, each on positive evidence only (a record without the quantity is not judged on it):

- still improving: the validation reconstruction loss (`val/recon_loss` per epoch, else
  `val/loss`) still fell, over the last tenth of the epochs (at least the last one), by more
  than `STILL_IMPROVING_SHARE` of the whole range the curve spanned (not read for a family
  whose own loss does not settle, `Family.settles`: VAEGAN's, in its discriminator's features);
- collapsed: a Gaussian posterior with no active unit (the decoder ignores the code), or a
  codebook whose perplexity is below `MIN_CODEBOOK_PERPLEXITY` (a handful of codes for every
  image);
- samples fail the floor: `gen/precision` below `PRECISION_FLOOR` or `gen/recall` below
  `RECALL_FLOOR` (in the dataset's own classifier's features: samples that are almost never
  like a test image, or that cover next to none of the test set, as blobs and one repeated
  image do; blurry but varied samples cover a few: BetaVAE's on Fashion-MNIST, 0.006-0.011).

The thresholds were measured on quick-suite cells at 1, 3, 10, 20 and 30 epochs and on
reports/two-datasets, beside their sample grids (docs/metrics.md gives the table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmark.models import FAMILIES
from benchmark.records.results import Record

STILL_IMPROVING_SHARE = 0.05
MIN_ACTIVE_UNITS = 1
MIN_CODEBOOK_PERPLEXITY = 4.0
PRECISION_FLOOR = 0.10
RECALL_FLOOR = 0.002

# the marks a flagged cell carries, one per reason (markdown superscript, LaTeX $^{...}$)
REASONS = {
    "improving": ("i", "still improving"),
    "collapsed": ("c", "collapsed"),
    "floor": ("f", "samples fail the realism floor"),
}


def ordered_marks(marks) -> tuple[str, ...]:
    """Marks in the order of REASONS (i, c, f), whatever order they were gathered in."""
    order = [mark for mark, _ in REASONS.values()]
    return tuple(sorted(set(marks), key=order.index))


@dataclass(frozen=True)
class Flag:
    reason: str  # a key of REASONS
    detail: str  # the numbers behind it, for the report's list of flagged cells

    @property
    def mark(self) -> str:
        return REASONS[self.reason][0]

    def text(self) -> str:
        return f"{REASONS[self.reason][1]} ({self.detail})"


@dataclass(frozen=True)
class Health:
    flags: tuple[Flag, ...] = ()

    @property
    def learned(self) -> bool:
        return not self.flags

    @property
    def marks(self) -> tuple[str, ...]:
        return ordered_marks({f.mark for f in self.flags})


def validation_curve(record: Record) -> list[float]:
    """The per-epoch validation reconstruction loss (else total loss) the record holds."""
    epochs = (record.training or {}).get("epochs") or []
    for key in ("val/recon_loss", "val/loss"):
        curve = [e[key] for e in epochs if isinstance(e.get(key), int | float)]
        if len(curve) == len(epochs) and curve:
            return [float(v) for v in curve]
    return []


def still_improving(curve: list[float]) -> Flag | None:
    if len(curve) < 2 or not all(math.isfinite(v) for v in curve):
        return None
    tail = max(1, round(len(curve) / 10))
    span = max(curve) - min(curve)
    if span <= 0:
        return None
    share = (curve[-1 - tail] - curve[-1]) / span
    if share <= STILL_IMPROVING_SHARE:
        return None
    last = "the last epoch" if tail == 1 else f"the last {tail} epochs"
    return Flag(
        "improving",
        f"validation loss fell {share:.0%} of its range in {last} of {len(curve)}",
    )


def collapsed(metrics: dict[str, float]) -> Flag | None:
    units = metrics.get("recon/active_units")
    if units is not None and units < MIN_ACTIVE_UNITS:
        return Flag("collapsed", f"{units:.0f} active latent units")
    perplexity = metrics.get("recon/codebook_perplexity")
    if perplexity is not None and perplexity < MIN_CODEBOOK_PERPLEXITY:
        return Flag("collapsed", f"codebook perplexity {perplexity:.1f}")
    return None


def below_floor(metrics: dict[str, float]) -> Flag | None:
    failed = [
        f"gen/{name} {metrics[f'gen/{name}']:.3f} < {floor:g}"
        for name, floor in (("precision", PRECISION_FLOOR), ("recall", RECALL_FLOOR))
        if f"gen/{name}" in metrics and metrics[f"gen/{name}"] < floor
    ]
    return Flag("floor", ", ".join(failed)) if failed else None


def health(record: Record) -> Health:
    """The verdict on one finished cell (a failed cell has no numbers to rank)."""
    if record.status != "ok":
        return Health()
    family = FAMILIES.get(record.model) if record.model in FAMILIES else None
    settles = family is None or family.settles
    checks = (
        still_improving(validation_curve(record)) if settles else None,
        collapsed(record.metrics),
        below_floor(record.metrics),
    )
    return Health(tuple(flag for flag in checks if flag is not None))
