"""The command line: `main` (the `vaebench` console script and `python -m benchmark`), its
parser, the commands, their input checks, pre-flight and the lazy imports' declaration."""

from benchmark.cli.main import main

__all__ = ["main"]
