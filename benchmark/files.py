"""Every file vaebench writes goes through here: inside the folder it belongs to, never through
a symlink, atomically, with the user's umask.

Results folders are often shared (a group's scratch space, a SLURM cluster's project folder),
so anyone with write access may plant a symlink where vaebench is about to write. Hence:

- a file is written to a temporary that `mkstemp` creates (O_EXCL: never an existing file or
  link), then renamed over its path: a symlink there is replaced, never followed, and a reader
  sees the old file or the new one, never half of one, even when the writer is killed;
- its folder, and every folder between it and `root` (the folder the user named, when the
  caller knows it), must be a real folder inside `root`: a planted `history -> /elsewhere` is
  refused with one line;
- a file opened in place (a claim's lock) is opened with O_NOFOLLOW;
- `mkstemp` makes files 0600; they get 0666 minus the umask, as `open()` would give them, so
  a group sharing the results folder can read them where the umask says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmark.errors import UserInputError


class UnsafePath(UserInputError, OSError):
    """A write that would leave its folder or go through a symlink: one line and exit 2 at the
    command line; after a cell has trained, the piece it was writing is recorded as failed."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_inside(path: Path, root: Path | None) -> None:
    """`path`'s folder is a real folder inside `root`: each folder from `root` down to it is a
    folder, not a link (`root` itself may be one: it is the folder the user named). Without
    `root`, the file's own folder is the one the user named."""
    folder = Path(path).parent
    if root is None:
        return
    root = Path(root)
    try:
        relative = folder.relative_to(root)
    except ValueError:
        raise UnsafePath(f"refusing to write {path}: it is not inside {root}") from None
    current = root
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise UnsafePath(f"refusing to write {path}: {current} is a symbolic link")
    real_root, real_folder = os.path.realpath(root), os.path.realpath(folder)
    if os.path.commonpath([real_root, real_folder]) != real_root:
        raise UnsafePath(f"refusing to write {path}: it resolves outside {root}")


def make_folder(folder: Path, root: Path | None = None) -> Path:
    """mkdir -p, then the same check as for a file in it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    check_inside(folder / "file", root)
    return folder


@contextlib.contextmanager
def replacing(path: Path, root: Path | None = None) -> Iterator[Path]:
    """The path of a new temporary beside `path`, for any writer that takes a path (an image
    library, torch.save, safetensors); renamed over `path` when the block ends without error,
    removed otherwise."""
    path = Path(path)
    make_folder(path.parent, root)
    check_inside(path, root)
    fd, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    try:
        yield Path(temporary)
        with open(temporary, "rb+") as handle:  # on disk before it replaces the old file
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, root: Path | None = None) -> None:
    with replacing(path, root) as temporary:
        temporary.write_bytes(data)


def write_text(path: Path, text: str, root: Path | None = None) -> None:
    write_bytes(path, text.encode("utf-8"), root)


def write_with(path: Path, writer: Callable[[Path], object], root: Path | None = None) -> None:
    """`writer(temporary_path)` writes the file; it then takes `path`'s place."""
    with replacing(path, root) as temporary:
        writer(temporary)


def copy_file(source: Path, target: Path, root: Path | None = None) -> None:
    """A copy of `source` (content and times) at `target`, written as every other file is."""
    with replacing(target, root) as temporary:
        shutil.copyfile(source, temporary)
        shutil.copystat(source, temporary)


def open_in_place(path: Path, root: Path | None = None) -> int:
    """A file descriptor for reading and writing `path` where it is (a lock file): created if
    missing, never through a symlink (O_NOFOLLOW: a link there is an error)."""
    path = Path(path)
    make_folder(path.parent, root)
    check_inside(path, root)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as error:
        if path.is_symlink():
            raise UnsafePath(f"refusing to open {path}: it is a symbolic link") from None
        raise error


class RefusedFile(ValueError):
    """A tensors file that cannot be used; the message is one line in our words."""


def load_tensors(path: Path):
    """torch.load with `weights_only=True` (no pickled code runs) and none of torch's own
    advice: a file that holds more than tensors is refused in one line, and torch's warnings
    about it stay quiet."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RefusedFile(
            f"{Path(path).name} holds more than tensors (loading it would run code): refused"
        ) from None
    except Exception as error:  # noqa: BLE001 - truncated, damaged or not a torch file
        raise RefusedFile(
            f"{Path(path).name} is not a readable tensors file ({type(error).__name__})"
        ) from None
