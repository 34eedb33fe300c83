"""`vaebench`: a thin command line over suites, the runner and the report.

Exit status: 0 all cells ok; 1 some cell failed (or, for compare, a regression); 2 bad input
(one line, no traceback); 3 internal error (one line and the path of a log with the traceback);
130 interrupted by Ctrl-C, 143 by SIGTERM (finished cells are kept; rerun to resume).

The parser is `parser.py`; what each command does is `commands.py`; the checks of their
input are `checks.py`.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings

from benchmark.cli import commands
from benchmark.cli.parser import build_parser
from benchmark.errors import UserInputError


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
    import threading

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # SIGTERM: SLURM's warning before a kill
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _handler(args.command)(args, extra)
    except UserInputError as error:
        print(f"vaebench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        if terminated and args.command == "run":
            from benchmark.tracking import agent_plugin

            if (agent := agent_plugin()) is not None:
                agent.mark_preempting()  # under a sweep agent: requeue this run, to resume
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


def _handler(command: str):
    """The function behind `vaebench COMMAND`: `perf` (a diagnostic that times the runner) in
    its own module beside the others, off the route a run takes."""
    if command == "perf":
        from benchmark.perf import measure  # torch and the runner: only when measuring

        return measure.perf_command
    return getattr(commands, f"{command}_command")


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
