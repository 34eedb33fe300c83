"""What a dataset's numbers cost: the budget every table's caption gives (epochs, training
images, batch size, network set, samplers, seeds, hardware), from the records alone."""

from __future__ import annotations

from benchmark.records.results import Record
from benchmark.report.tables import sampler_phrase


def _values(values) -> str:
    """One value, or every distinct one ('20/30'): a folder may mix budgets."""
    distinct = sorted({str(v) for v in values if v is not None}, key=lambda v: (len(v), v))
    return "/".join(distinct) if distinct else "?"


def _seeds(seeds: list[int]) -> str:
    seeds = sorted(set(seeds))
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{len(seeds)} ({seeds[0]}–{seeds[-1]})"
    return f"{len(seeds)} ({', '.join(map(str, seeds))})"


def budget_parts(records: list[Record], dataset: str, code=("`", "`")) -> list[tuple[str, str]]:
    """(what, value) pairs of the dataset's ok cells, in caption order."""
    ok = [r for r in records if r.dataset == dataset and r.status == "ok"]
    if not ok:
        return []
    train = [r.config.train for r in ok]
    return [
        ("epochs", _values(t.epochs for t in train)),
        ("training images", _values((r.dataset_info.splits or {}).get("train") for r in ok)),
        ("batch size", _values(t.batch_size for t in train)),
        ("networks", _values(f"{code[0]}{r.config.arch}{code[1]}" for r in ok)),
        ("samplers", sampler_phrase(ok, dataset, code)),
        ("seeds", _seeds([int(r.seed) for r in ok])),
        ("hardware", _values(r.environment.hardware_id or r.environment.device for r in ok)),
    ]


def budget_phrase(records: list[Record], dataset: str, code=("`", "`")) -> str:
    """'epochs 30; training images 3800; ...': what every table of the dataset says it cost."""
    return "; ".join(f"{what} {value}" for what, value in budget_parts(records, dataset, code))
