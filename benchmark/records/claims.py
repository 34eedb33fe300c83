"""A claim per cell, so that runners sharing one results folder never train the same cell.

Two `vaebench run` processes, several `--jobs` workers, W&B sweep agents or SLURM jobs may
point at the same `--out`. Before training a cell, its runner takes an exclusive `flock` on
`CELL.claim` beside the record, and keeps it until the record is written. The kernel drops the
lock when its process dies (crash, SIGKILL, OOM), and on NFS the server drops it when the
node's lease lapses, so a crashed owner never holds a cell forever. The file holds who owns it
(host, pid, start time), for the message the other runners print.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path

from benchmark import files
from benchmark.records.cellfiles import CellFiles, run_folder


class CellClaim:
    """An exclusive claim on one cell; `release()` (or the process's death) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # unlink while still holding the lock, so nobody locks a file that is about to vanish
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> CellClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(cell: CellFiles) -> CellClaim | None:
    """The cell's claim, or None when another live process holds it."""
    path = cell.claim
    while True:
        fd = _open_claim(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The previous owner may have released (and unlinked) the file between our open and
        # our lock: then we hold a lock on a file nobody else can see. Retry on the new one.
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(owner) + "\n").encode())
    return CellClaim(path, fd)


def _open_claim(path: Path) -> int:
    """The claim file, opened where it is, never through a symlink: a link planted at its path
    (which would have us truncate its target) is removed, once; a second one is refused."""
    try:
        return files.open_in_place(path, run_folder(path))
    except files.UnsafePath:
        if not path.is_symlink():
            raise
    path.unlink()  # the link itself, never its target
    return files.open_in_place(path, run_folder(path))


def describe_owner(cell: CellFiles) -> str:
    """`host:pid since TIME`, from the claim file (best effort: it may be gone already)."""
    try:
        owner = json.loads(cell.claim.read_text())
        return f"{owner['host']}:{owner['pid']} since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another runner"


@contextlib.contextmanager
def exclusive(lock_path: Path):
    """Wait for, then hold, an exclusive `flock` on `lock_path` for the block (for writers that
    several runners may reach at once, such as the report of a shared folder). The lock file
    stays; the lock dies with its process."""
    fd = files.open_in_place(lock_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
