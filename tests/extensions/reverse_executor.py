"""A fifth executor, nowhere in the package: the cells run here, last one first. It proves that
an executor is one module and one registration (`EXECUTORS.add("reverse", PLUGIN)`): the
command line's `--executor` choices and options, the runner, resume and the report follow."""

from __future__ import annotations

from benchmark.errors import UserInputError
from benchmark.running.cell import execute_cell, report_outcome
from benchmark.running.executors.base import ExecutorPlugin


class Reverse:
    runs_here = True  # this machine's datasets: the runner opens them first

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, pending, total, out_dir, shared, log, tracker_factory):
        outcomes = {}
        for index, config in reversed(pending):
            prefix = f"[{index}/{total}] {config.cell_id}"
            self.ran.append(config.cell_id)
            outcome = execute_cell(config, out_dir, shared, log, tracker_factory, prefix)
            report_outcome(prefix, outcome, log)
            outcomes[index] = outcome
        return outcomes


class ReversePlugin(ExecutorPlugin):
    name = "reverse"
    help = "the cells run here, last one first (a test's executor)"

    def __init__(self) -> None:
        self.made: list[Reverse] = []

    def add_run_options(self, parser) -> None:
        parser.add_argument("--reverse-limit", type=int, default=100, help="at most N cells")

    def check(self, args, suite, cells) -> None:
        if len(cells) > args.reverse_limit:
            raise UserInputError(f"--executor reverse runs at most {args.reverse_limit} cells")

    def create(self, args, suite, cells, out):
        self.made.append(Reverse())
        return self.made[-1]


PLUGIN = ReversePlugin()
