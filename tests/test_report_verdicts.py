"""A best family is marked only where the evidence carries it: a two-sided Welch t-test against
the runner-up with at least two seeds a family, ties marked where it cannot separate them,
nothing with one seed, never on gen/'s self-consistency rows."""

from __future__ import annotations

import pytest
from scipy.stats import ttest_ind
from test_report import table_rows

from benchmark.report import from_directory, write_report
from benchmark.report.tables import Cell, comparison, welch_p
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import write_record

# recon/ssim per family and seed: VQVAE clearly ahead of both; VAEGAN and BetaVAE overlap
SSIM = {
    "vqvae": [0.90, 0.91, 0.92],
    "vaegan": [0.60, 0.70, 0.65],
    "betavae": [0.62, 0.66, 0.71],
}
# recon/mse: VAEGAN and VQVAE overlap at the top (lower is better), BetaVAE far behind
MSE = {"vqvae": [10.0, 14.0, 12.0], "vaegan": [11.0, 13.0, 15.0], "betavae": [30.0, 31.0, 32.0]}


def write_records(out, seeds: list[int]):
    suite = resolve_suite("quick", ["train.epochs=1"], None, None, seeds)
    for cell in expand_cells(suite):
        i = seeds.index(cell.seed)
        metrics = {
            "recon/ssim": SSIM[cell.model][i],
            "recon/mse": MSE[cell.model][i],
            "gen/ssim": SSIM[cell.model][i],  # self-consistency: never ranked
            "gen/fid": 100.0 - 50 * SSIM[cell.model][i],  # realism: ranked
        }
        write_record(out, cell, metrics=metrics)
    return out


def test_welch_p_equals_scipys_test_on_the_raw_seeds():
    a, b = SSIM["vaegan"], SSIM["betavae"]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    std = lambda v: (sum((x - mean(v)) ** 2 for x in v) / (len(v) - 1)) ** 0.5  # noqa: E731
    cells = [Cell("value", mean(v), std(v), len(v)) for v in (a, b)]
    assert welch_p(*cells) == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue)


def test_three_seeds_bold_where_the_test_separates_and_tie_marks_where_it_does_not(tmp_path):
    out = write_records(tmp_path / "three", [0, 1, 2])
    table = comparison(from_directory(out).records, "mnist-5k", "recon/", ["ssim", "mse"])
    # ssim: VQVAE against the runner-up (VAEGAN or BetaVAE): p < 0.001 -> bold
    assert table["ssim"]["vqvae"].best and not any(c.tied for c in table["ssim"].values())
    # mse: VQVAE 12 +- 2 against VAEGAN 13 +- 2 (p = 0.58): tied; BetaVAE is clearly behind
    assert {f for f, c in table["mse"].items() if c.tied} == {"vqvae", "vaegan"}
    assert not any(c.best for c in table["mse"].values())

    report = write_report(from_directory(out), out / "report").read_text()
    recon = table_rows(report, "### Headline")
    ssim, mse = recon["recon/ssim ↑"], recon["recon/mse ↓"]
    assert ssim["VQVAE"].startswith("**") and "†" not in ssim["VQVAE"]
    assert mse["VQVAE"].endswith("†") and mse["VAEGAN"].endswith("†")
    assert not mse["BetaVAE"].endswith("†")
    tex = (out / "report" / "summary.tex").read_text()
    assert r"\textbf{0.910\,$\pm$\,0.010}" in tex
    assert r"12.0\,$\pm$\,2.0$^\dagger$" in tex and r"13.0\,$\pm$\,2.0$^\dagger$" in tex
    assert "n = 3 seeds per family" in tex


def test_one_seed_marks_nothing_and_says_n_once(tmp_path):
    out = write_records(tmp_path / "one", [0])
    report = write_report(from_directory(out), out / "report").read_text()
    for title in ("### Headline", "### Further rows"):
        section = report.split(title, 1)[1].split("###", 1)[0]
        assert "*n = 1 seed per family: no best family is marked;" in section
        assert "**" not in section.split("|", 1)[1] and "†" not in section
        assert "(n=" not in section
    tex = (out / "report" / "summary.tex").read_text()
    assert r"\textbf" not in tex.split("\n", 1)[1] and r"$^\dagger$" not in tex.split("\n", 1)[1]


def test_gen_pixel_rows_are_a_self_consistency_table_never_ranked(tmp_path):
    out = write_records(tmp_path / "three", [0, 1, 2])
    report = write_report(from_directory(out), out / "report").read_text()
    headline = table_rows(report, "### Headline")
    assert {"gen/fid ↓", "recon/ssim ↑", "recon/mse ↓"} == set(headline)
    assert headline["gen/fid ↓"]["VQVAE"].startswith("**")
    further = table_rows(report, "### Further rows")
    assert "gen/ssim" in further and not any(label.startswith("gen/fid") for label in further)
    assert not any("**" in c or "†" in c for c in further["gen/ssim"].values())


def test_figures_tex_includes_each_familys_grids_with_its_sampler(tmp_path):
    import torch
    from torchvision.utils import save_image

    out = write_records(tmp_path / "grids", [0])
    for path in (out / "results" / "quick").glob("*.json"):
        for name in ("samples", "reconstructions"):
            save_image(torch.rand(1, 8, 8), path.with_suffix(f".{name}.png"))
    write_report(from_directory(out), out / "report")
    tex = (out / "report" / "figures.tex").read_text()
    assert tex.count(r"\begin{figure}") == tex.count(r"\end{figure}")
    assert tex.count("sampler (left) and rows of 8 test images") == 3  # one per family
    for family in ("vaegan", "betavae", "vqvae"):
        graphic = (
            rf"\includegraphics[width=0.45\linewidth]{{images/mnist-5k-{family}-seed0.samples.png}}"
        )
        assert graphic in tex
        assert (out / "report" / "images" / f"mnist-5k-{family}-seed0.samples.png").exists()
    assert r"samples from the \texttt{fixed prior} sampler" in tex
    assert tex.count("{") == tex.count("}")


def _classifier(sha: str) -> dict:
    return {
        "recipe": {"name": "cnn2-v1"},
        "test_accuracy": 0.957,
        "accuracy_floor": 0.55,
        "sha256": sha * 64,
    }


def write_realism(out, other_classifier: bool):
    """VAEGAN's samples far ahead of BetaVAE's; `other_classifier`: BetaVAE's seed 2 scored
    with other classifier weights."""
    suite = resolve_suite("quick", ["train.epochs=1"], ["vaegan", "betavae"], None, [0, 1, 2])
    for cell in expand_cells(suite):
        good = cell.model == "vaegan"
        metrics = {
            "gen/cfd": (80.0 if good else 500.0) + cell.seed,
            "gen/precision": (0.70 if good else 0.48) + 0.01 * cell.seed,
            "gen/recall": (0.72 if good else 0.12) + 0.01 * cell.seed,
            "gen/ssim": 0.9 if good else 0.5,
        }
        other = other_classifier and cell.model == "betavae" and cell.seed == 2
        write_record(out, cell, metrics=metrics, classifier=_classifier("b" if other else "a"))
    return write_report(from_directory(out), out / "report").read_text()


REALISM_ROWS = ("gen/cfd ↓", "gen/precision ↑", "gen/recall ↑")


def test_the_realism_table_carries_cfd_precision_recall_and_names_the_classifier(tmp_path):
    """gen/cfd (lower), gen/precision and gen/recall (higher) are ranked realism rows; the
    classifier behind them is named under the table (and in the LaTeX caption)."""
    report = write_realism(tmp_path, other_classifier=False)
    realism = table_rows(report, "### Headline")
    assert all(realism[row]["VAEGAN"].startswith("**") for row in REALISM_ROWS)
    section = report.split("### Headline", 1)[1].split("###", 1)[0]
    assert "cnn2-v1, test accuracy 0.957 (floor 0.55), weights SHA-256 `aaaaaaaaaaaaaaaa…`" in (
        section
    )
    tex = (tmp_path / "report" / "summary.tex").read_text()
    assert (
        "cfd, precision and recall in the features of a classifier trained on the dataset (test "
        "accuracy 0.957)" in tex
    )


def test_rows_measured_with_two_classifiers_rank_no_one(tmp_path):
    report = write_realism(tmp_path, other_classifier=True)
    realism = table_rows(report, "### Headline")
    assert not any("**" in c or "†" in c for row in REALISM_ROWS for c in realism[row].values())
    section = report.split("### Headline", 1)[1].split("###", 1)[0]
    assert "the dataset's own classifier (several: their cfds do not compare, not ranked)" in (
        section
    )
    summary = report.split("## Summary across datasets", 1)[1].split("\n## ", 1)[0]
    assert "| mnist-5k | gen/cfd ↓ | · | · |" in summary
