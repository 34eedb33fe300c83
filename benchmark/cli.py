"""`vaebench`: a thin command line over suites, the runner and the report.

Exit status: 0 all cells ok; 1 some cell failed; 2 bad input (one line, no traceback);
130 interrupted (finished cells are kept; rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

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
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, repeatable: train.epochs=3, betavae.beta=4",
    )
    run.add_argument("--out", type=Path, help=f"output folder [{DEFAULT_OUT}/SUITE]")
    run.add_argument(
        "--data-mirror",
        metavar="DIR",
        help="folder holding hub datasets as owner/name/ (or $VAEBENCH_DATA_MIRROR)",
    )
    run.add_argument("--dry-run", action="store_true", help="print the resolved cells and exit")

    report = sub.add_parser(
        "report",
        help="build REPORT.md from result records",
        description="Build REPORT.md from the records under RESULTS_DIR.",
    )
    report.add_argument("results", type=Path, help="a run's --out folder or any records folder")
    report.add_argument("--out", type=Path, help="report folder [RESULTS_DIR]")

    sub.add_parser("list", help="list built-in suites, models and datasets")
    return parser


def _run(args) -> int:
    from benchmark.report import write_report
    from benchmark.runner import run_suite
    from benchmark.suites import expand_cells, resolve_suite

    suite = resolve_suite(args.suite, args.overrides, args.models, args.datasets, args.seeds)
    out = args.out or Path(DEFAULT_OUT) / suite.name
    cells = expand_cells(suite)
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
    records = run_suite(suite, out, mirror=args.data_mirror, log=lambda m: print(m, flush=True))
    report = write_report(records, out)
    _print_summary(records)
    failed = [r for r in records if r["status"] != "ok"]
    print(
        f"vaebench: {len(records) - len(failed)} ok, {len(failed)} failed; records in "
        f"{out / 'results'}; report {report}"
    )
    return 1 if failed else 0


def _print_summary(records: list[dict]) -> None:
    from benchmark.report.tables import summary_table

    for dataset in sorted({r["dataset"] for r in records}):
        for prefix in ("recon/", "gen/"):
            table = summary_table(records, dataset, prefix)
            if not table.empty:
                print(f"\n{dataset} {prefix}")
                print(table.to_string())
    print()


def _report(args) -> int:
    from benchmark.report import write_report
    from benchmark.results import load_records

    if not args.results.is_dir():
        raise UserInputError(f"no such folder: {args.results}")
    records = load_records(args.results)
    if not records:
        raise UserInputError(f"no result records under {args.results}")
    path = write_report(records, args.out or args.results)
    print(f"vaebench: report of {len(records)} records: {path}")
    return 0


def _list(args) -> int:
    from benchmark.data import DATASETS
    from benchmark.models import FAMILIES
    from benchmark.suites import builtin_suites

    print("suites:   " + ", ".join(builtin_suites()))
    print("models:   " + ", ".join(FAMILIES.names()))
    print("datasets: " + ", ".join(DATASETS) + " (or a local path, or a hub id owner/name)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
    handlers = {"run": _run, "report": _report, "list": _list}
    try:
        return handlers[args.command](args)
    except UserInputError as error:
        print(f"vaebench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nvaebench: interrupted; finished cells are kept; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
