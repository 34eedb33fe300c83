"""`vaebench`: a thin command line over suites, the runner and the report.

Exit status: 0 all cells ok; 1 some cell failed (or, for compare, a regression); 2 bad input
(one line, no traceback); 3 internal error (one line and the path of a log with the traceback);
130 interrupted by Ctrl-C, 143 by SIGTERM (finished cells are kept; rerun to resume).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path

from benchmark import files
from benchmark.errors import UserInputError

DEFAULT_OUT = "vaebench-runs"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _csv(kind):
    def parse(text: str) -> list:
        try:
            return [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            message = f"expected a comma-separated list, got '{text}'"
            raise argparse.ArgumentTypeError(message) from None

    return parse


def _add_overrides(parser: argparse.ArgumentParser, default: list[str], help: str) -> None:
    """`--set section.key=value`, repeatable (argparse copies the default before appending)."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=default, metavar="KEY=VALUE", help=help
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaebench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="train and evaluate a suite, write records and REPORT.md",
        description="Train and evaluate every cell (dataset x model x seed) "
        "of a suite. Finished cells with the same config are skipped.",
    )
    run.add_argument(
        "--suite",
        default="quick",
        help="built-in suite name (quick, paper) or a suite YAML file [quick]",
    )
    run.add_argument("--models", type=_csv(str), help="comma-separated: betavae,vqvae,vaegan")
    run.add_argument(
        "--datasets",
        type=_csv(str),
        help="comma-separated registered names, local paths or hub ids owner/name",
    )
    run.add_argument("--seeds", type=_csv(int), help="comma-separated seeds, e.g. 0,1,2")
    _add_overrides(run, [], "dotted override, repeatable: train.epochs=3, betavae.beta=4")
    run.add_argument("--out", type=Path, help=f"output folder [{DEFAULT_OUT}/SUITE]")
    run.add_argument(
        "--data-mirror",
        metavar="DIR",
        help="folder holding hub datasets as owner/name/ (or $VAEBENCH_DATA_MIRROR)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run up to N cells at once, each in its own process: GPUs round-robin (N above "
        "the GPU count puts several cells on a card), CPU cores shared [1]",
    )
    run.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="keep a rolling checkpoint of each cell every N epochs (0: none), so that a killed "
        "or requeued cell resumes where it stopped [the suite's checkpoint_every, 5 unless it "
        "says otherwise]",
    )
    run.add_argument(
        "--wandb-artifacts",
        action="store_true",
        help="log each cell's final checkpoint as a W&B model artifact of its run",
    )
    run.add_argument("--dry-run", action="store_true", help="print the resolved cells and exit")
    run.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default="local",
        help="local: cells run here; slurm: one submitit job per cell, settings from the "
        "suite's slurm section or --set slurm.partition=gpu, slurm.time_min=..., ... [local]",
    )
    run.add_argument(
        "--wandb",
        choices=["auto", "online", "offline", "off"],
        default="auto",
        help="W&B tracking: online when logged in, else offline [auto]",
    )
    run.add_argument("--wandb-project", help="W&B project [$WANDB_PROJECT or vaebench]")
    run.add_argument("--wandb-entity", help="W&B entity (user or team)")
    run.add_argument(
        "--wandb-log-every",
        type=int,
        default=1,
        metavar="N",
        help="stream every Nth training step to W&B (the .steps.csv beside each "
        "record keeps all of them) [1]",
    )

    sweep = sub.add_parser(
        "sweep",
        help="run a W&B sweep file locally, without a W&B server",
        description="Propose trials with the `sweeps` package (grid, random, "
        "bayes) and run each through the sweep's own command.",
    )
    sweep.add_argument("file", type=Path, help="a sweep YAML, e.g. sweeps/betavae_beta.yaml")
    sweep.add_argument("--count", type=int, default=4, help="number of trials [4]")
    sweep.add_argument("--out", type=Path, help=f"output folder [{DEFAULT_OUT}/sweep-NAME]")

    report = sub.add_parser(
        "report",
        help="build REPORT.md, plots, summary.tex and summary.csv from records",
        description="Build REPORT.md (tables, plots, image grids, provenance), summary.tex and "
        "summary.csv from the records under RESULTS_DIR, or from W&B runs.",
    )
    report.add_argument(
        "results", type=Path, nargs="?", help="a run's --out folder or any folder of records"
    )
    report.add_argument("--out", type=Path, help="report folder [RESULTS_DIR]")
    report.add_argument("--wandb", metavar="ENTITY/PROJECT", help="build from W&B runs instead")
    report.add_argument("--group", help="with --wandb: only this run group (SUITE/DATASET)")
    report.add_argument("--tag", help="with --wandb: only runs with this tag")

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

    prepare = sub.add_parser(
        "prepare",
        help="fetch (or verify) a suite's datasets and pretrained weights, for offline clusters",
        description="On a machine with internet: fetch every dataset of the suite at its "
        "pinned revision (into the datasets cache, or laid out under --data-mirror DIR) and the "
        "pretrained weights its metrics need (hash-checked, into the torch cache), then print "
        "what to copy where. A mirror already present is verified. Exit 1 when a piece is "
        "missing, one line each.",
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

    perf = sub.add_parser(
        "perf",
        help="throughput: ours vs stock pythae, speed options, evaluation, --jobs, FLOPs",
        description="Measure on any suite's networks, interleaved and as medians: training "
        "images/s per family with pythae's stock TrainingPipeline, with our runner and with "
        "each speed option (against fp32 too), evaluation images/s per metric group, suite "
        "throughput with --jobs N against sequential, the share of a quick-suite cell outside "
        "training, and FLOP/s against the machine's matrix-multiply rate. Prints a table and "
        "writes JSON.",
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
        "--no-cell",
        action="store_true",
        help="skip the full quick-suite cell (time outside training)",
    )
    perf.add_argument("--out", type=Path, default=Path("perf.json"), help="JSON [perf.json]")

    sub.add_parser("list", help="list built-in suites, models and datasets")
    return parser


def _run(args, extra: list[str]) -> int:
    from benchmark import tracking
    from benchmark.preflight import check_after_training_pieces
    from benchmark.report import from_directory, write_report
    from benchmark.runner import run_suite
    from benchmark.suites import check_devices, expand_cells, resolve_suite
    from benchmark.sweeping import overrides_from_args

    # a sweep agent's ${args} (`--train.epochs=3`) are overrides like --set
    overrides, selections = overrides_from_args(extra)
    if tracking.in_sweep() and args.wandb != "off":
        # attach to the agent's run; its wandb.config holds this trial's parameters
        swept = {f"--{k}={v}" for k, v in tracking.sweep_parameters().items()}
        more, more_selections = overrides_from_args(sorted(swept))
        overrides, selections = more + overrides, {**more_selections, **selections}
    suite = resolve_suite(
        args.suite,
        args.overrides + overrides,
        args.models or selections.get("models"),
        args.datasets or selections.get("datasets"),
        args.seeds or _ints(selections.get("seeds")),
    )
    out = args.out or _default_out(suite.name)
    cells = expand_cells(suite)
    if tracking.in_sweep() and len(cells) != 1:
        raise UserInputError(
            f"under a W&B sweep agent a run is one cell, got {len(cells)}: sweep over models, "
            "datasets and seeds, or fix them in the sweep's command"
        )
    if args.wandb_log_every < 1:
        raise UserInputError("--wandb-log-every must be at least 1")
    if args.jobs < 1:
        raise UserInputError("--jobs must be at least 1")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise UserInputError("--checkpoint-every must be 0 (none) or a number of epochs")
    checkpoint_every = (
        suite.checkpoint_every if args.checkpoint_every is None else args.checkpoint_every
    )
    if args.jobs > 1 and args.executor != "local":
        raise UserInputError("--jobs is for the local executor; SLURM runs one job per cell")
    if not args.dry_run:  # before any work: one line, exit 2
        if args.executor == "local":
            check_devices(suite)
        check_mirror(args.data_mirror)
        check_writable(out)
        check_after_training_pieces(cells)  # a missing piece never throws training away
    print(
        f"vaebench: suite '{suite.name}': {len(cells)} cells "
        f"({len(suite.datasets)} datasets x {len(suite.models)} models x "
        f"{len(suite.seeds)} seeds) -> {out}",
        flush=True,
    )
    if args.dry_run:
        for cell in cells:
            print(f"  {cell.cell_id}  config {cell.config_hash()}")
        return 0
    log = lambda message: print(message, flush=True)  # noqa: E731
    trackers = tracking.make_tracker_factory(
        args.wandb,
        args.wandb_project,
        args.wandb_entity,
        str(out),
        log,
        args.wandb_log_every,
        artifacts=args.wandb_artifacts,
    )
    executor = None
    if args.executor == "slurm":
        from benchmark.executors import slurm_executor

        executor = slurm_executor(suite.slurm, out / "slurm", f"vaebench-{suite.name}")
    records = run_suite(
        suite,
        out,
        mirror=args.data_mirror,
        log=log,
        tracker_factory=trackers,
        executor=executor,
        jobs=args.jobs,
        checkpoint_every=checkpoint_every,
        update_run=tracking.update_run,
    )
    report = write_report(from_directory(out / "results"), out)
    _print_summary(records)
    failed = [r for r in records if r["status"] != "ok"]
    print(
        f"vaebench: {len(records) - len(failed)} ok, {len(failed)} failed; records in "
        f"{out / 'results'}; report {report}"
    )
    return 1 if failed else 0


def check_writable(folder: Path) -> None:
    """A results folder we cannot write to fails now, not after the first cell has trained."""
    import tempfile

    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"cannot write results to {folder}: it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".vaebench-write-check-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserInputError(f"cannot write results to {folder}: {reason}") from None


def check_mirror(mirror: str | os.PathLike | None) -> None:
    """--data-mirror (or $VAEBENCH_DATA_MIRROR) names a folder that exists: a typo there would
    otherwise send every dataset to the hub."""
    from benchmark.data import MIRROR_ENV

    named, where = (mirror, "--data-mirror") if mirror else (os.environ.get(MIRROR_ENV), MIRROR_ENV)
    if not named:
        return
    if not Path(named).expanduser().is_dir():
        what = "a file, not a folder" if Path(named).expanduser().exists() else "no such folder"
        raise UserInputError(f"{where} {named}: {what}")


def check_output_file(option: str, path: Path) -> None:
    """A file vaebench is asked to write: its folder exists, and it is not itself a folder
    (refused before any work, one line)."""
    if path.is_dir():
        raise UserInputError(f"{option} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UserInputError(f"{option} {path}: no such folder {path.parent}")


def _ints(values: list[str] | None) -> list[int] | None:
    if values is None:
        return None
    try:
        return [int(v) for v in values]
    except ValueError:
        raise UserInputError(f"seeds must be integers, got {values}") from None


def _default_out(suite_name: str) -> Path:
    """$VAEBENCH_OUT (set per trial by `vaebench sweep`), a per-run folder under a sweep agent,
    else vaebench-runs/SUITE."""
    import os

    if os.environ.get("VAEBENCH_OUT"):
        return Path(os.environ["VAEBENCH_OUT"])
    if os.environ.get("WANDB_SWEEP_ID"):
        run_id = os.environ.get("WANDB_RUN_ID", "run")
        return Path(DEFAULT_OUT) / f"sweep-{os.environ['WANDB_SWEEP_ID']}" / run_id
    return Path(DEFAULT_OUT) / suite_name


def _sweep(args, extra: list[str]) -> int:
    from benchmark.sweeping import run_local_sweep

    if args.count < 1:
        raise UserInputError("--count must be at least 1")
    out = args.out or Path(DEFAULT_OUT) / f"sweep-{args.file.stem}"
    trials = run_local_sweep(args.file, args.count, out, log=lambda m: print(m, flush=True))
    failed = [t for t in trials if t["exit_code"] != 0]
    print(f"vaebench: {len(trials)} trials, {len(failed)} failed; summary {out / 'sweep.json'}")
    return 1 if failed else 0


def _print_summary(records: list[dict]) -> None:
    from benchmark.report.tables import sampler_phrase, seeds_phrase, summary_table, table_specs

    for dataset in sorted({r["dataset"] for r in records}):
        for spec in table_specs():
            table, n = summary_table(records, dataset, spec.prefix, list(spec.metrics))
            if not table.empty:
                samplers = sampler_phrase(records, dataset, code=("", ""))
                title = spec.title.split(" (")[0].lower()
                print(f"\n{dataset} {spec.prefix} {title}; {seeds_phrase(n)}")
                if spec.prefix == "gen/":
                    print(f"  samplers: {samplers}")
                print(table.to_string())
    print()


def _report(args, extra: list[str]) -> int:
    from benchmark.report import from_directory, from_wandb, write_report
    from benchmark.report.sources import dump_records

    if args.wandb and args.results:
        raise UserInputError("give either RESULTS_DIR or --wandb ENTITY/PROJECT, not both")
    if args.wandb and not args.out:
        raise UserInputError("--wandb needs --out REPORT_DIR")
    if not args.wandb and args.results is None:
        raise UserInputError("give RESULTS_DIR (a run's --out folder) or --wandb ENTITY/PROJECT")
    if not args.wandb and not args.results.is_dir():
        raise UserInputError(f"no such folder: {args.results}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserInputError(f"--out {args.out} is a file; give a folder for the report")
    if args.wandb:
        inputs = from_wandb(args.wandb, args.group, args.tag)
        dump_records(inputs, args.out / "records")
    else:
        inputs = from_directory(args.results)
        if not inputs.records:
            raise UserInputError(f"no result records under {args.results}")
    path = write_report(inputs, args.out or args.results)
    print(f"vaebench: report of {len(inputs.records)} records: {path}")
    return 0


def _evaluate(args, extra: list[str]) -> int:
    from benchmark.report import from_directory, write_report
    from benchmark.rescoring import parse_metric_names, parse_sampler_choice, rescore
    from benchmark.results import iter_records

    if not args.results.is_dir():
        raise UserInputError(f"no such folder: {args.results}")
    parse_metric_names(args.metrics)  # bad names: one line before any work
    sampler = parse_sampler_choice(args.sampler)
    check_mirror(args.data_mirror)
    if not any(True for _ in iter_records(args.results)):
        raise UserInputError(f"no result records under {args.results}")
    from benchmark.tracking import update_run

    updated = rescore(
        args.results, args.metrics, args.data_mirror, sampler=sampler, update_run=update_run
    )
    if updated:
        inputs = from_directory(args.results)
        path = write_report(inputs, args.results)
        print(f"vaebench: {len(updated)} records re-scored; report {path}")
    else:
        print(
            f"vaebench: nothing to re-score under {args.results} (no finished cell with a "
            "checkpoint)"
        )
    return 0


def _prepare(args, extra: list[str]) -> int:
    from benchmark.provisioning import prepare, report
    from benchmark.suites import resolve_suite

    suite = resolve_suite(args.suite, args.overrides, None, args.datasets, None)
    if args.data_mirror is not None and args.data_mirror.is_file():
        raise UserInputError(f"--data-mirror {args.data_mirror} is a file, not a folder")
    print(f"vaebench: preparing suite '{suite.name}' ({', '.join(suite.datasets)})", flush=True)
    return report(prepare(suite, args.data_mirror), lambda line: print(line, flush=True))


def _compare(args, extra: list[str]) -> int:
    import json

    from benchmark.compare import (
        check_thresholds,
        classifier_difference,
        compare,
        delta_table,
        hardware_difference,
        load_side,
    )

    check_thresholds(args.k, args.rel_tol)  # before any work
    for option, target in (
        ("--write-baseline", args.write_baseline),
        ("--markdown", args.markdown),
    ):
        if target is not None:
            check_output_file(option, target)
    if args.write_baseline:
        baseline = load_side(args.baseline)
        files.write_text(args.write_baseline, json.dumps(baseline, indent=2) + "\n")
        print(f"vaebench: baseline of {len(baseline['cells'])} cells: {args.write_baseline}")
        return 0
    if args.current is None:
        raise UserInputError("compare needs BASELINE and CURRENT (or --write-baseline FILE)")
    baseline = load_side(args.baseline) if args.baseline.is_file() else None  # checked first
    current = load_side(args.current)
    if baseline is None:  # a records folder: its records of the current side's configuration
        baseline = load_side(args.baseline, match=current)
    deltas = compare(baseline, current, k=args.k, rel_tol=args.rel_tol)
    table = delta_table(deltas)
    print(table)
    for difference in (
        hardware_difference(baseline, current),
        classifier_difference(baseline, current),
    ):
        if difference is not None:
            print(difference)
    if args.markdown:
        files.write_text(args.markdown, table + "\n")
    bad = [d for d in deltas if d.verdict in ("regression", "missing")]
    improved = sum(d.verdict == "improved" for d in deltas)
    print(f"\nvaebench: {len(bad)} regressions, {improved} improvements, {len(deltas)} compared")
    return 1 if bad else 0


def _perf(args, extra: list[str]) -> int:
    from benchmark.perf import run_perf, table, write_json

    if args.repeats < 1:
        raise UserInputError("--repeats must be at least 1")
    if args.jobs < 1:
        raise UserInputError("--jobs must be at least 1")
    results = run_perf(
        args.overrides,
        args.repeats,
        args.models,
        not args.no_cell,
        log=lambda m: print(m, flush=True),
        suite_name=args.suite,
        datasets=args.datasets,
        mirror=args.data_mirror,
        jobs=args.jobs,
    )
    write_json(results, args.out)
    print()
    print(table(results))
    print(f"\nvaebench: perf results in {args.out}")
    return 0


def _list(args, extra: list[str]) -> int:
    from benchmark.data import DATASETS
    from benchmark.models import FAMILIES
    from benchmark.suites import builtin_suites

    print("suites:   " + ", ".join(builtin_suites()))
    print("models:   " + ", ".join(FAMILIES.names()))
    samplers = [f"{name} ({', '.join(FAMILIES.get(name).samplers)})" for name in FAMILIES.names()]
    print("samplers: " + "; ".join(samplers) + " (eval.sampler; the first is the default)")
    print("datasets: " + ", ".join(DATASETS) + " (or a local path, or a hub id owner/name)")
    return 0


def _quiet_libraries() -> None:
    """Progress bars of `datasets` would interleave with the benchmark's own progress lines."""
    try:
        import datasets

        datasets.disable_progress_bars()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
    _quiet_libraries()
    handlers = {
        "run": _run,
        "report": _report,
        "list": _list,
        "sweep": _sweep,
        "compare": _compare,
        "evaluate": _evaluate,
        "prepare": _prepare,
        "perf": _perf,
    }
    import threading

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # SIGTERM: SLURM's warning before a kill
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return handlers[args.command](args, extra)
    except UserInputError as error:
        print(f"vaebench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        if terminated and args.command == "run":
            from benchmark.tracking import mark_preempting

            mark_preempting()  # under a sweep agent: requeue this run, which then resumes
        print(
            f"\nvaebench: {'terminated' if terminated else 'interrupted'}; finished cells are "
            "kept; rerun the same command to resume",
            file=sys.stderr,
        )
        return 143 if terminated else 130
    except BrokenPipeError:  # `vaebench run --dry-run | head`: the reader has gone, not a bug
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return 141
    except Exception as error:  # a bug, not bad input: one line, the traceback in a log
        log = _write_crash_log(args.command)
        line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"vaebench {args.command}: internal error: {type(error).__name__}: {line} "
            f"(traceback in {log})",
            file=sys.stderr,
        )
        return 3
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: records flushed, finished cells kept, exit 143."""


def _terminated(signum, frame):
    raise Terminated


def _write_crash_log(command: str) -> str:
    import datetime as dt
    import os
    import tempfile
    import traceback

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, path = tempfile.mkstemp(prefix=f"vaebench-{command}-crash-{stamp}-", suffix=".log")
    with os.fdopen(fd, "w") as handle:
        handle.write(traceback.format_exc())
    return path


if __name__ == "__main__":
    sys.exit(main())
