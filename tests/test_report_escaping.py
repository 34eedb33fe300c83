"""A record's strings reach summary.tex as literal text: a hostile dataset or sampler name
compiles, reads no file and runs no command, even under `pdflatex -shell-escape`."""

from __future__ import annotations

import re
import subprocess

from benchmark.records.results import Record
from benchmark.report.latex import escape, figures_tex, latex_tables
from benchmark.running.suites import expand_cells, resolve_suite
from conftest import make_record, requires_tex

HOSTILE = [
    r"tex^^5cinput{^^2fetc^^2fhostname}",  # ^^5c is TeX's notation for a backslash
    r"x\input{secret.txt}",
    r"y\immediate\write18{touch pwned}",
    "z$\\def~{}$#&%_{}<>|",
]


def test_every_special_character_becomes_text():
    for name in HOSTILE:
        escaped = escape(name)
        # what is left of a command: only the escapes this function writes
        for command in ("\\input", "\\immediate", "\\write", "\\def"):
            assert command not in escaped
        assert "^^" not in escaped and "~" not in escaped.replace(r"\textasciitilde{}", "")


def hostile_records() -> list[Record]:
    records = []
    cells = expand_cells(resolve_suite("quick", ["train.epochs=1"], None, None, [0, 1]))
    for name in HOSTILE:
        for cell in cells:
            data = make_record(
                cell,
                metrics={"recon/ssim": 0.5 + 0.1 * cell.seed, "gen/cfd": 100.0 + cell.seed},
                sampler={"name": name},
            ).as_dict()
            data["dataset"] = name
            data["config"]["dataset"] = name
            records.append(Record.parse(data))
    return records


@requires_tex
def test_hostile_names_compile_as_text_and_run_nothing(tmp_path):
    records = hostile_records()
    (tmp_path / "secret.txt").write_text("the secret\n")
    (tmp_path / "summary.tex").write_text(latex_tables(records))
    grids = [
        {"dataset": r.dataset, "family": r.model, "sampler": r.sampler["name"], "samples": ""}
        for r in records
    ]
    (tmp_path / "figures.tex").write_text(figures_tex(grids))
    (tmp_path / "paper.tex").write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        "\\begin{document}\n\\input{summary.tex}\n\\input{figures.tex}\n\\end{document}\n"
    )
    result = subprocess.run(
        ["pdflatex", "-shell-escape", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert result.returncode == 0, log[-2000:]
    # TeX logs each file it opens as "(PATH": neither was opened, nor their text typeset
    assert "(./secret.txt" not in log and "(/etc/hostname" not in log
    assert "the secret" not in log
    assert not (tmp_path / "pwned").exists()
    assert "Overfull" not in log


SCRIPT = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def test_markdown_and_csv_carry_hostile_strings_as_text(tmp_path):
    """A dataset name, a sampler name and an error text with HTML, pipes and a spreadsheet
    formula: REPORT.md escapes the HTML and the pipes, summary.csv neutralises the formula."""
    from benchmark.report import from_directory, write_report
    from conftest import write_record

    dataset = f"=HYPERLINK(x)|{SCRIPT}"
    cells = expand_cells(resolve_suite("quick", ["train.epochs=1"], None, None, [0, 1]))
    for cell in cells:
        cell = cell.model_copy(update={"dataset": dataset})
        if cell.model == "vqvae" and cell.seed == 1:
            write_record(tmp_path, cell, "failed", error=f"RuntimeError: {SCRIPT}\nsecond line")
            continue
        metrics = {"recon/ssim": 0.5 + 0.1 * cell.seed}
        write_record(tmp_path, cell, metrics=metrics, sampler={"name": f"s|{SCRIPT}"})
    report = write_report(from_directory(tmp_path), tmp_path / "report").read_text()
    assert "<img" not in report and "<script" not in report
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;" in report
    assert "RuntimeError: &lt;img" in report and "second line" in report
    columns = None  # every row of a table has its header's number of unescaped pipes
    for line in report.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        pipes = len(re.findall(r"(?<!\\)\|", line))
        columns = pipes if columns is None else columns
        assert pipes == columns, f"a string broke out of its cell: {line}"
    csv = (tmp_path / "report" / "summary.csv").read_text()
    assert "\n'=HYPERLINK" in csv and "\n=HYPERLINK" not in csv
