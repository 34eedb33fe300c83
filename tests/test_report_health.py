"""Only models that have learned are ranked: each cell's health verdict from its record, the
marks it puts on the tables, the summary across datasets that ranks only learned families, one
number format, and LaTeX whose headline table fits one column of a two-column paper."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import table_rows

from benchmark.report import from_directory, write_report
from benchmark.report.health import health, still_improving
from benchmark.report.ranks import ranked_rows
from benchmark.report.tables import (
    Cell,
    comparison,
    mean_and_spread,
    row_label,
    row_scale,
    significant,
)
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import make_record, requires_tex, write_record

ROOT = Path(__file__).resolve().parents[1]
SETTLED = [40.0, 25.0, 20.0, 18.0, 17.5, 17.3, 17.2, 17.15, 17.1, 17.1]
FALLING = [40.0, 30.0, 24.0]  # the last epoch: 6 of the 16 points of its range


def epochs(curve: list[float]) -> dict:
    return {"epochs": [{"epoch": i + 1, "val/recon_loss": v} for i, v in enumerate(curve)]}


def one_cell(model: str = "betavae", seed: int = 0):
    suite = resolve_suite("quick", ["train.epochs=1"], [model], None, [seed])
    return expand_cells(suite)[0]


HEALTHY = {"recon/active_units": 16.0, "gen/precision": 0.6, "gen/recall": 0.5}


@pytest.mark.parametrize(
    ("metrics", "curve", "reasons"),
    [
        (HEALTHY, SETTLED, []),
        (HEALTHY, FALLING, ["improving"]),
        (HEALTHY, [30.0], []),  # one epoch: no curve to judge, not judged on it
        ({**HEALTHY, "recon/active_units": 0.0}, SETTLED, ["collapsed"]),
        ({**HEALTHY, "gen/precision": 0.05}, SETTLED, ["floor"]),
        ({**HEALTHY, "gen/recall": 0.001}, SETTLED, ["floor"]),
        ({**HEALTHY, "gen/recall": 0.006}, SETTLED, []),  # blurry, varied: BetaVAE, fashion
        ({"gen/precision": 0.0, "gen/recall": 0.0}, FALLING, ["improving", "floor"]),
        ({}, [], []),  # nothing to judge by: never flagged on missing evidence
    ],
)
def test_the_health_verdict_of_a_gaussian_cell(metrics, curve, reasons):
    record = make_record(one_cell(), metrics=metrics, training=epochs(curve))
    assert [flag.reason for flag in health(record).flags] == reasons


def test_vaegans_own_loss_is_not_read_for_a_plateau():
    """VAEGAN's reconstruction loss is in its discriminator's features, which move: a falling
    last epoch is no evidence (Family.settles); its samples and latents still are."""
    cell = one_cell("vaegan")
    falling = make_record(cell, metrics=HEALTHY, training=epochs(FALLING))
    assert health(falling).learned
    blobs = make_record(cell, metrics={**HEALTHY, "gen/recall": 0.0}, training=epochs(FALLING))
    assert [f.reason for f in health(blobs).flags] == ["floor"]


def test_a_codebook_used_by_a_handful_of_codes_has_collapsed():
    cell = one_cell("vqvae")
    few = make_record(cell, metrics={"recon/codebook_perplexity": 3.2}, training=epochs(SETTLED))
    many = make_record(cell, metrics={"recon/codebook_perplexity": 11.0}, training=epochs(SETTLED))
    assert [f.text() for f in health(few).flags] == ["collapsed (codebook perplexity 3.2)"]
    assert health(many).learned


def test_still_improving_reads_the_last_tenth_of_the_epochs():
    base = [40, 30, 24, 20, 18, 17, 16, 15.5, 15, 14.7, 14.5, 14.3, 14.2, 14.1, 14, 13.9, 13.8]
    base += [13.7]
    # 20 epochs: the last two count; 13.7 -> 13.5 is 0.8% of the range (40 - 13.5): settled
    assert still_improving([*base, 13.6, 13.5]) is None
    # 13.7 -> 11.0: 9% of the range, more than 5%
    flag = still_improving([*base, 12.0, 11.0])
    assert flag is not None and flag.detail == (
        "validation loss fell 9% of its range in the last 2 epochs of 20"
    )


@pytest.mark.parametrize(
    ("folder", "learned"),
    [("reports/three-seeds", False), ("reports/quick", True), ("reports/two-datasets", True)],
)
def test_the_committed_reports_cells(folder, learned):
    """3 epochs (grey blobs and smudges: reports/three-seeds' grids) have not learned;
    30 epochs of the quick suite (digits) and 20 of two-datasets (digits, garments) have."""
    records = from_directory(ROOT / folder).records
    assert records and all(health(r).learned == learned for r in records)


def write_suite(
    out: Path, values: dict, flagged: set = frozenset(), dataset="mnist-5k", broken=False
):
    """Three seeds of every family of `values` ({model: [recon/ssim per seed]}); the families
    in `flagged` still improving (`broken`: also collapsed, and samples below the floor)."""
    suite = resolve_suite("quick", ["train.epochs=1"], list(values), [dataset], [0, 1, 2])
    for cell in expand_cells(suite):
        ssim = values[cell.model][cell.seed]
        metrics = {"recon/ssim": ssim, "recon/mse": 40 - 10 * ssim, "gen/cfd": 1900 - 800 * ssim}
        if broken:
            metrics |= {
                "gen/kid": 0.09 - 0.05 * ssim,
                "gen/precision": 0.001 + ssim / 100,
                "gen/recall": ssim / 1000,
                "recon/active_units": 0.0,
                "recon/codebook_perplexity": 1.0,
            }
        curve = FALLING if cell.model in flagged else SETTLED
        write_record(out, cell, metrics=metrics, training=epochs(curve))
    return out


CLEAR = {"vqvae": [0.90, 0.91, 0.92], "vaegan": [0.60, 0.70, 0.65], "betavae": [0.40, 0.41, 0.42]}


def test_no_family_is_marked_on_a_row_a_flagged_family_would_lead(tmp_path):
    out = write_suite(tmp_path, CLEAR, flagged={"vqvae"})
    table = comparison(from_directory(out).records, "mnist-5k", "recon/", ["ssim"])
    assert table["ssim"]["vqvae"].flags == ("i",)
    assert not any(c.best or c.tied for c in table["ssim"].values())
    report = write_report(from_directory(out), out / "report").read_text()
    assert "**Health: 3 of 9 finished cells have not learned** (3 still improving (i))" in report
    detail = "still improving (validation loss fell 38% of its range in the last epoch of 3)"
    assert f"- mnist-5k / VQVAE / seed 0: {detail}" in report
    row = table_rows(report, "### Headline")["recon/ssim ↑"]
    assert row["VQVAE"] == "0.910 ± 0.010<sup>i</sup>" and "**" not in "".join(row.values())
    tex = (out / "report" / "summary.tex").read_text()
    # LaTeX: the marks in the family's header (a mark per cell would not fit a column)
    assert r" & VQVAE$^{\mathrm{i}}$ \\" in tex and r"0.910\,$\pm$\,0.010 \\" in tex
    assert r"\textbf" not in tex.split("\n", 1)[1]


def test_a_flagged_family_that_trails_leaves_the_leaders_verdict(tmp_path):
    out = write_suite(tmp_path, CLEAR, flagged={"betavae"})
    table = comparison(from_directory(out).records, "mnist-5k", "recon/", ["ssim"])
    assert table["ssim"]["vqvae"].best and table["ssim"]["betavae"].flags == ("i",)


def test_the_summary_ranks_learned_families_on_every_dataset(tmp_path):
    """mnist-5k: VQVAE ahead, VAEGAN and BetaVAE inseparable (both 2=); fashion_mnist: BetaVAE
    still improving, so unranked there, VQVAE ahead of VAEGAN. Mean ranks over the rows."""
    write_suite(tmp_path, {**CLEAR, "betavae": [0.62, 0.66, 0.71]})
    write_suite(tmp_path, CLEAR, flagged={"betavae"}, dataset="fashion_mnist")
    records = from_directory(tmp_path).records
    rows = {(r.dataset, r.prefix + r.metric): r for r in ranked_rows(records)}
    assert rows[("mnist-5k", "recon/ssim")].ranks == {"vqvae": 1, "vaegan": 2, "betavae": 2}
    assert rows[("fashion_mnist", "recon/ssim")].ranks == {"vqvae": 1, "vaegan": 2}
    report = write_report(from_directory(tmp_path), tmp_path / "report").read_text()
    assert report.index("## Summary across datasets") < report.index("## fashion_mnist")
    summary = report.split("## Summary across datasets", 1)[1].split("\n## ", 1)[0]
    assert "| mnist-5k | recon/ssim ↑ | 2= | 2= | 1 |" in summary
    assert "| fashion_mnist | recon/ssim ↑ | 2 | not learned<sup>i</sup> | 1 |" in summary
    # VAEGAN 2 on both datasets' three rows; BetaVAE 2 on mnist-5k's; VQVAE 1 everywhere
    assert "| **mean rank** | | **2.00** (of 6) | **2.00** (of 3) | **1.00** (of 6) |" in summary
    tex = (tmp_path / "report" / "summary.tex").read_text()
    first = tex.split(r"\begin{table}")[1]  # the summary is the first table of summary.tex
    assert r"\label{tab:vaebench-summary}" in first
    assert "recon/ssim $\\uparrow$ & 2= & 2= & 1 \\\\" in first
    assert "recon/ssim $\\uparrow$ & 2 & n.l.$^{\\mathrm{i}}$ & 1 \\\\" in first
    assert "mean rank (rows) & 2.00 (6) & 2.00 (3) & 1.00 (6) \\\\" in first


@pytest.mark.parametrize(
    ("mean", "std", "text"),
    [
        (813.2, 178.0, "813 ± 180"),
        (0.7503, 0.0123, "0.750 ± 0.012"),
        (813.2, 1.8, "813.2 ± 1.8"),
        (0.5, 0.0996, "0.50 ± 0.10"),
        (12.0, 2.0, "12.0 ± 2.0"),
        (1586.6, 17.3, "1587 ± 17"),
        (float("nan"), 0.5, "nan ± 0.5"),  # a diverged seed: shown, never a crash
        (3.0, float("inf"), "3 ± inf"),
    ],
)
def test_one_number_format(mean, std, text):
    assert mean_and_spread(mean, std) == text


def test_rows_of_small_numbers_are_scaled_to_fit_a_column():
    kid = {"a": Cell("value", 0.0442, 0.00085, 3), "b": Cell("value", 0.0575, 0.0025, 3)}
    precision = {"a": Cell("value", 0.058, 0.038, 3), "b": Cell("value", 0.0, 0.0, 3)}
    alone = {"a": Cell("value", 0.0009, n=1), "b": Cell("not_applicable")}
    assert [row_scale(row) for row in (kid, precision, alone)] == [3, 0, 3]
    assert kid["a"].text(show_n=False, scale=3) == "44.20 ± 0.85"
    assert row_label("gen/", "kid", 3) == "gen/kid ×10³ ↓"


def test_a_number_alone_keeps_four_significant_digits():
    assert [significant(v) for v in (1586.6, 0.04413, 16.0, 0.5, 95.759)] == [
        "1587",
        "0.04413",
        "16",
        "0.5000",
        "95.76",
    ]


PAPER = r"""\documentclass[twocolumn]{article}
\usepackage{booktabs}
\usepackage{graphicx}
\begin{document}
\input{%s}
\end{document}
"""


def table_widths(log: str) -> dict[str, float]:
    """{label: natural width / column width} of each table, as summary.tex reports them."""
    found = re.findall(r"^vaebench: table (\S+) ([\d.]+)pt of ([\d.]+)pt$", log, re.MULTILINE)
    return {label: float(width) / float(column) for label, width, column in found}


def overfull_boxes(tex: Path) -> list[str]:
    """Compile `tex` into a two-column article; the log's overfull-box lines."""
    paper = tex.parent / "paper.tex"
    paper.write_text(PAPER % tex.name)
    subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", paper.name],
        cwd=tex.parent,
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = (tex.parent / "paper.log").read_text(errors="replace")
    return [line for line in log.splitlines() if line.startswith("Overfull")]


@requires_tex
def test_both_tables_compile_in_a_two_column_paper_without_an_overfull_box(tmp_path):
    """Wide cells: four-digit means with their spread, every family flagged for all three
    reasons, two datasets."""
    wide = {
        "vqvae": [0.9012, 0.9345, 0.9123],
        "vaegan": [0.6, 0.7, 0.65],
        "betavae": [0.4, 0.5, 0.3],
    }
    write_suite(tmp_path, wide, flagged={"vqvae", "vaegan", "betavae"}, broken=True)
    write_suite(tmp_path, wide, dataset="fashion_mnist", broken=True)
    report = tmp_path / "report"
    write_report(from_directory(tmp_path), report)
    assert overfull_boxes(report / "summary.tex") == []
    # the headline tables fit the column as they are (at most a 5% shrink); the tables of
    # further rows, longer labels, are scaled to the column where wider
    widths = table_widths((report / "paper.log").read_text())
    assert len(widths) == 5, widths  # the summary, and two tables a dataset
    assert all(w <= 1.05 for label, w in widths.items() if not label.endswith("further")), widths
    # the figures (PDFs of the metric figures) compile too, each within its column or page
    assert overfull_boxes(report / "figures.tex") == []
    assert (report / "paper.log").read_text().count("mnist-5k-realism.pdf") >= 1
    # the check itself sees an overfull box: the same rows at twice the column count
    # the check itself sees an overfull box: tables twice as wide, set without the fitting box
    wider = (report / "summary.tex").read_text().replace(r"\sbox{\vaebenchbox}{%", "{%")
    wider = wider.replace(r"\ifdim\wd\vaebenchbox>", r"\ifdim0pt>")
    wider = wider.replace("{@{}lrrr@{}}", "{@{}lrrrrrr@{}}")
    wider = wider.replace(r" \\" + "\n", r" & 1000.0 $\pm$ 10.0 & 1000.0 $\pm$ 10.0 & x \\" + "\n")
    (report / "wider.tex").write_text(wider)
    assert overfull_boxes(report / "wider.tex")


def test_every_table_says_the_budget_its_numbers_cost(tmp_path):
    suite = resolve_suite("quick", ["train.epochs=20"], ["vqvae", "betavae"], None, [0, 1, 2])
    for cell in expand_cells(suite):
        write_record(
            tmp_path,
            cell,
            metrics={"recon/ssim": 0.5 + cell.seed / 100, "recon/recon_loss": 10.0 + cell.seed},
            sampler={"name": "prior" if cell.model == "vqvae" else "normal"},
            dataset_info={"splits": {"train": 3800, "val": 200, "test": 1000}},
            environment={"device": "cpu", "device_name": "Intel(R) Xeon(R) Processor"},
        )
    budget = (
        "epochs 20; training images 3800; batch size 64; networks `compact`; samplers BetaVAE "
        "`normal`, VQVAE `prior`; seeds 3 (0–2); hardware Intel(R) Xeon(R) Processor"
    )
    report = write_report(from_directory(tmp_path), tmp_path / "report").read_text()
    assert f"*Budget: {budget}.*" in report
    tex = (tmp_path / "report" / "summary.tex").read_text()
    latex = budget.replace("`", "").replace("–", "--")
    assert tex.count(f"Budget: {latex}.") == 2  # in both tables' captions


@requires_tex
def test_the_committed_two_dataset_tables_fit_a_column(tmp_path):
    """Real numbers (reports/two-datasets): the headline tables at their natural width, within
    5% of one column; nothing overfull."""
    shutil.copy(ROOT / "reports" / "two-datasets" / "summary.tex", tmp_path / "summary.tex")
    assert overfull_boxes(tmp_path / "summary.tex") == []
    widths = table_widths((tmp_path / "paper.log").read_text())
    headline = {label: w for label, w in widths.items() if label.endswith("headline")}
    assert len(headline) == 2 and all(w <= 1.05 for w in headline.values()), widths


def test_a_nan_or_huge_metric_is_shown_not_a_crash(tmp_path):
    suite = resolve_suite("quick", ["train.epochs=1"], ["vqvae", "betavae"], None, [0, 1])
    for cell in expand_cells(suite):
        nan = cell.model == "vqvae" and cell.seed == 1
        metrics = {"recon/mse": float("nan") if nan else 1e12 + cell.seed, "recon/ssim": 0.5}
        write_record(tmp_path, cell, metrics=metrics)
    report = write_report(from_directory(tmp_path), tmp_path / "report").read_text()
    row = table_rows(report, "### Headline")["recon/mse ↓"]
    # the NaN seed is left out of the mean, and the cell says it stands on one seed
    assert row["VQVAE"] == "1000000000000 (n=1)"
    assert row["BetaVAE"].startswith("1000000000000") and "(n=2)" in row["BetaVAE"]
