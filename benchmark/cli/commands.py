"""What each `vaebench` command does, once its arguments are parsed (`parser.py`): one
function per command, `NAME_command(args, extra) -> exit status`. Bad input raises
`UserInputError` (one line, exit 2, printed by `cli.main`).
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmark import files
from benchmark.cli.checks import check_mirror, check_output_file, check_run, check_writable
from benchmark.cli.parser import DEFAULT_OUT
from benchmark.errors import UserInputError
from benchmark.records.results import Record
from benchmark.running.executors import EXECUTORS
from benchmark.tracking import TRACKERS, agent_plugin, update_run


def run_command(args, extra: list[str]) -> int:
    from benchmark.cli.preflight import check_after_training_pieces, provision_networks
    from benchmark.report import from_directory, write_report
    from benchmark.running.runner import run_suite
    from benchmark.running.suites import expand_cells

    suite = _suite_of_run(args, extra)
    out = args.out or _default_out(suite.name)
    cells = expand_cells(suite)
    executor_plugin, tracker_plugin = EXECUTORS.get(args.executor), TRACKERS.get(args.tracker)
    checkpoint_every = check_run(args, suite, cells, out)  # one line and exit 2 each
    if not args.dry_run:  # the install, before any work: nothing trained is thrown away
        check_after_training_pieces(cells, tracker_plugin.required(args))
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
    provision_networks(cells, log)
    trackers = tracker_plugin.tracker_factory(args, out, log)
    executor = executor_plugin.create(args, suite, cells, out)
    records = run_suite(
        suite,
        out,
        mirror=args.data_mirror,
        log=log,
        tracker_factory=trackers,
        executor=executor,
        checkpoint_every=checkpoint_every,
        update_run=update_run,
    )
    report = write_report(from_directory(out / "results"), out)
    _print_summary(records)
    failed = [r for r in records if r.status != "ok"]
    print(
        f"vaebench: {len(records) - len(failed)} ok, {len(failed)} failed; records in "
        f"{out / 'results'}; report {report}"
    )
    return 1 if failed else 0


def _suite_of_run(args, extra: list[str]):
    """The suite `run` was asked for: --suite, --set, --models/--datasets/--seeds, and a sweep
    agent's parameters."""
    from benchmark.running.suites import resolve_suite
    from benchmark.running.sweeping import overrides_from_args

    # a sweep agent's ${args} (`--train.epochs=3`) are overrides like --set
    overrides, selections = overrides_from_args(extra)
    agent = agent_plugin()
    if agent is not None:  # the agent's run holds this trial's parameters
        swept = {f"--{k}={v}" for k, v in agent.agent_parameters(args).items()}
        more, more_selections = overrides_from_args(sorted(swept))
        overrides, selections = more + overrides, {**more_selections, **selections}
    return resolve_suite(
        args.suite,
        args.overrides + overrides,
        args.models or selections.get("models"),
        args.datasets or selections.get("datasets"),
        args.seeds or _ints(selections.get("seeds")),
    )


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
    if os.environ.get("VAEBENCH_OUT"):
        return Path(os.environ["VAEBENCH_OUT"])
    agent = agent_plugin()
    if agent is not None and (folder := agent.agent_folder()):
        return Path(DEFAULT_OUT) / folder
    return Path(DEFAULT_OUT) / suite_name


def sweep_command(args, extra: list[str]) -> int:
    from benchmark.running.sweeping import run_sweep

    if args.count < 1:
        raise UserInputError("--count must be at least 1")
    if args.parallel < 1:
        raise UserInputError("--parallel must be at least 1")
    slurm = _sweep_slurm_settings(args.overrides, args.executor)
    out = (args.out or Path(DEFAULT_OUT) / f"sweep-{args.file.stem}").resolve()
    check_writable(out)
    log = lambda message: print(message, flush=True)  # noqa: E731
    trials = EXECUTORS.get(args.executor).trials(
        args, slurm, out, log, lambda command: _trial_suite(command, args.overrides)
    )
    summaries = run_sweep(args.file, args.count, out, trials, args.parallel, log)
    failed = [t for t in summaries if t["exit_code"] != 0]
    print(f"vaebench: {len(summaries)} trials, {len(failed)} failed; summary {out / 'sweep.json'}")
    return 1 if failed else 0


def _sweep_slurm_settings(overrides: list[str], executor: str):
    """`vaebench sweep`'s --set: SLURM settings for every trial's job, nothing else."""
    from benchmark.config import SlurmConfig, validate
    from benchmark.running.suites import apply_override, parse_override

    values: dict = {}
    for text in overrides:
        path, value = parse_override(text)
        if path[0] != "slurm" or executor != "slurm":
            raise UserInputError(
                f"sweep --set {text}: only slurm.KEY=VALUE settings, with --executor slurm; "
                "a trial's own settings belong in the sweep file"
            )
        apply_override(values, path, value)
    return validate(SlurmConfig, values.get("slurm", {}), "slurm")


def _trial_suite(command: list[str], slurm_overrides: list[str]):
    """(cells, SLURM settings) of a trial whose command is `vaebench run ...` or `python -m
    benchmark run ...`, with the sweep's own SLURM settings on top; None for another command."""
    from benchmark.cli.parser import build_parser
    from benchmark.running.suites import expand_cells

    for at, part in enumerate(command[:-1]):
        if command[at + 1] == "run" and (Path(part).name == "vaebench" or part == "benchmark"):
            args, extra = build_parser().parse_known_args(command[at + 1 :])
            args.overrides = args.overrides + slurm_overrides
            suite = _suite_of_run(args, extra)
            return expand_cells(suite), suite.slurm
    return None


def _print_summary(records: list[Record]) -> None:
    from benchmark.report.budget import budget_phrase
    from benchmark.report.tables import Marks, seeds_phrase, summary_table, table_specs

    for dataset in sorted({r.dataset for r in records}):
        print(f"\n{dataset}: {budget_phrase(records, dataset, code=('', ''))}")
        for spec in table_specs():
            table, n = summary_table(records, dataset, spec, Marks(health=(" [", "]")))
            if not table.empty:
                title = spec.title.split(" (")[0].split(":")[0].lower()
                print(f"\n{dataset} {title}; {seeds_phrase(n)}")
                print(table.to_string())
    print()


def report_command(args, extra: list[str]) -> int:
    from benchmark.report import from_directory, write_report
    from benchmark.report.sources import dump_records

    sources = {p.name: s for p in TRACKERS.values() if (s := p.report_source(args))}
    if len(sources) > 1:
        raise UserInputError(f"give one tracker's runs, not those of {' and '.join(sources)}")
    if sources and args.results:
        raise UserInputError("give either RESULTS_DIR or a tracker's runs, not both")
    if sources and not args.out:
        raise UserInputError("a report from a tracker's runs needs --out REPORT_DIR")
    if not sources and args.results is None:
        raise UserInputError("give RESULTS_DIR (a run's --out folder) or --wandb ENTITY/PROJECT")
    if not sources and not args.results.is_dir():
        raise UserInputError(f"no such folder: {args.results}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserInputError(f"--out {args.out} is a file; give a folder for the report")
    if sources:
        inputs = next(iter(sources.values()))()
        dump_records(inputs, args.out / "records")
    else:
        inputs = from_directory(args.results)
        if not inputs.records:
            raise UserInputError(f"no result records under {args.results}")
    path = write_report(inputs, args.out or args.results)
    print(f"vaebench: report of {len(inputs.records)} records: {path}")
    return 0


def evaluate_command(args, extra: list[str]) -> int:
    from benchmark.cli.preflight import provision_networks
    from benchmark.records.results import iter_records
    from benchmark.report import from_directory, write_report
    from benchmark.running.rescoring import (
        parse_metric_names,
        parse_sampler_choice,
        rescore,
        rescoring_configs,
    )

    if not args.results.is_dir():
        raise UserInputError(f"no such folder: {args.results}")
    parse_metric_names(args.metrics)  # bad names: one line before any work
    sampler = parse_sampler_choice(args.sampler)
    check_mirror(args.data_mirror)
    if not any(True for _ in iter_records(args.results)):
        raise UserInputError(f"no result records under {args.results}")

    # the pretrained networks the re-scoring needs, fetched first as `vaebench run` does
    provision_networks(rescoring_configs(args.results, args.metrics), print)
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


def prepare_command(args, extra: list[str]) -> int:
    from benchmark.data.provisioning import prepare, report
    from benchmark.running.suites import resolve_suite

    suite = resolve_suite(args.suite, args.overrides, None, args.datasets, None)
    if args.data_mirror is not None and args.data_mirror.is_file():
        raise UserInputError(f"--data-mirror {args.data_mirror} is a file, not a folder")
    _check_weights_from(args.weights_from or [])
    print(f"vaebench: preparing suite '{suite.name}' ({', '.join(suite.datasets)})", flush=True)
    log = lambda line: print(line, flush=True)  # noqa: E731
    return report(prepare(suite, args.data_mirror, args.weights_from, log), log)


def _check_weights_from(paths) -> None:
    """Each --weights-from FILE is a copy of a pinned distribution (by SHA-256), before any work."""
    from benchmark.data.weights import ALL_WEIGHTS, sha256_of

    archives = {network.archive.sha256: network.archive.file_name for network in ALL_WEIGHTS}
    for path in paths:
        if not path.exists():
            raise UserInputError(f"--weights-from {path}: no such file")
        if not path.is_file():  # a folder, a FIFO: reading it would fail or block
            raise UserInputError(f"--weights-from {path}: not a regular file")
        if sha256_of(path) not in archives:
            known = " or ".join(sorted(set(archives.values())))
            raise UserInputError(f"--weights-from {path}: not a copy of {known} (SHA-256 differs)")


def compare_command(args, extra: list[str]) -> int:
    import json

    from benchmark.report.compare import (
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


def list_command(args, extra: list[str]) -> int:
    from benchmark.data.catalogue import DATASETS
    from benchmark.models import FAMILIES
    from benchmark.running.suites import builtin_suites

    print("suites:   " + ", ".join(builtin_suites()))
    print("models:   " + ", ".join(FAMILIES.names()))
    samplers = [f"{name} ({', '.join(FAMILIES.get(name).samplers)})" for name in FAMILIES.names()]
    print("samplers: " + "; ".join(samplers) + " (eval.sampler; the first is the default)")
    print("datasets: " + ", ".join(DATASETS) + " (or a local path, or a hub id owner/name)")
    return 0
