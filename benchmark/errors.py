"""Errors that the CLI turns into one clear line and exit status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserInputError(Exception):
    """Bad input from the user (argument, config key, name). Exit 2, one line, no traceback."""


class DatasetUnavailable(UserInputError):
    """A dataset cannot be loaded here (no network and no cached / mirrored / local copy)."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> UserInputError:
    """`unknown model 'vae-gan'; did you mean 'vaegan'? valid: betavae, vaegan, vqvae`."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return UserInputError(f"unknown {kind} '{name}'{hint} valid: {', '.join(valid)}")


def one_line(error: BaseException) -> str:
    """An exception as the one line a record or a log keeps of it: `TypeName: first line`."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
