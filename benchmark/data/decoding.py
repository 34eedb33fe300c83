"""Images decoded once: a loaded `datasets` split becomes a uint8 tensor (N, C, H, W), with its
class labels, and the result is kept in the tensor cache (`$VAEBENCH_CACHE/datasets/`), keyed by
what determines the pixels (the source's pinned revision or fingerprints, the column, size and
channels). Decoding is the slow part of loading (seconds for MNIST, minutes for CelebA).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark import files
from benchmark.errors import UserInputError

CACHE_ENV = "VAEBENCH_CACHE"


CACHE_FORMAT = 4  # bump when decoding or the file layout changes


def cache_dir() -> Path | None:
    """`$VAEBENCH_CACHE` (or ~/.cache/vaebench); `off` disables the cache."""
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() in ("off", "0", "false", "none"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "vaebench"


def decoded_splits(
    source: Any,
    name: str,
    column: str | None,
    image_size: int | None,
    channels,
    label_column: str | None,
):
    """{split: uint8 tensor}, {split: int64 labels} or None, info. Decoding images is the slow
    part of loading (seconds for MNIST, minutes for CelebA): its result is kept as tensors,
    keyed by the source's identity."""
    folder = cache_dir()
    identity = [CACHE_FORMAT, source.identity, column, image_size, channels, label_column]
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]
    path = folder / "datasets" / f"{key}.pt" if folder else None
    if path is not None and path.exists() and (cached := _read_cache(path, key)) is not None:
        splits, labels, meta = cached
        return splits, labels, {**source.info, **meta}
    dataset_dict = {
        split: dataset
        for split, dataset in source.load().items()
        if split in ("train", "test", "validation", "valid")
    }
    column = _image_column(dataset_dict["train"], column, name)
    mode, rule = _channel_mode(dataset_dict, column, channels)
    splits = {
        split: _to_uint8(dataset, column, image_size, name, mode)
        for split, dataset in dataset_dict.items()
    }
    labels, label_meta = _labels(dataset_dict, label_column, name)
    meta = {
        "image_column": column,
        "channels": 1 if mode == "L" else 3,
        "channel_rule": rule,
        **label_meta,
    }
    if path is not None:
        with contextlib.suppress(OSError):  # a read-only home must not stop a run
            digest = _splits_digest(splits, labels)
            payload = {"key": key, "splits": splits, "meta": meta, "digest": digest}
            if labels is not None:
                payload["labels"] = labels
            files.write_with(path, lambda temporary: torch.save(payload, temporary))
    return splits, labels, {**source.info, **meta}


def _labels(dataset_dict: dict, column: str | None, name: str):
    """({split: int64 class indices}, meta) or (None, meta saying why there are none).

    The column is the one named (data.label_column, or the registered dataset's), else the
    first `ClassLabel` column. A named column must hold class indices 0..K-1 (or booleans)."""
    import datasets

    train = dataset_dict["train"]
    if column is None:
        column = next(
            (k for k, f in train.features.items() if isinstance(f, datasets.ClassLabel)), None
        )
        if column is None:
            return None, {
                "labels_missing": "the dataset has no label column (a ClassLabel "
                "feature, or one named by data.label_column)"
            }
    if any(column not in d.column_names for d in dataset_dict.values()):
        raise UserInputError(
            f"dataset '{name}' has no label column '{column}' in every split (columns: "
            f"{', '.join(train.column_names)}); set data.label_column"
        )
    feature = train.features[column]
    labels = {}
    for split, dataset in dataset_dict.items():
        values = np.asarray(dataset.select_columns([column])[column])
        if values.dtype == bool:
            values = values.astype(np.int64)
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or values.min() < 0:
            raise UserInputError(
                f"label column '{column}' of dataset '{name}' does not hold class indices "
                f"(non-negative integers); set data.label_column to one that does"
            )
        labels[split] = torch.from_numpy(values.astype(np.int64))
    if isinstance(feature, datasets.ClassLabel):
        classes = feature.num_classes
    else:
        classes = int(max(int(t.max()) for t in labels.values())) + 1
    if classes < 2 or any(int(t.max()) >= classes for t in labels.values()):
        raise UserInputError(
            f"label column '{column}' of dataset '{name}' needs at least 2 classes, indexed "
            f"0..K-1 (found {classes})"
        )
    return labels, {"label_column": column, "classes": classes}


def _is_grayscale(mode: str) -> bool:
    return mode in ("L", "1", "I", "I;16", "F", "LA")


def _channel_mode(dataset_dict: dict, column: str, declared: int | None) -> tuple[str, str]:
    """One PIL mode for every image of every split: the declared `data.channels`, else the mode
    of most images (a dataset mixing grayscale and colour images is not decided by whichever
    comes first in a split). Counted from the image headers, without decoding the pixels."""
    if declared is not None:
        return ("L" if declared == 1 else "RGB"), f"declared (data.channels={declared})"
    import datasets
    from PIL import Image

    grayscale = colour = 0
    for dataset in dataset_dict.values():
        dataset = dataset.select_columns([column])
        raw = isinstance(dataset.features[column], datasets.Image)
        if raw:  # file bytes or paths: PIL reads the mode from the header
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        for row in dataset:
            value = row[column]
            if raw:
                source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
                with Image.open(source) as image:
                    gray = _is_grayscale(image.mode)
            else:  # arrays: (H, W) or (H, W, 1) are grayscale
                shape = np.asarray(value).shape
                gray = len(shape) == 2 or shape[-1] == 1
            grayscale += gray
            colour += not gray
    mode = "L" if grayscale > colour else "RGB"
    return mode, f"mode of most images ({grayscale} grayscale, {colour} colour)"


def _read_cache(path: Path, key: str):
    """The cached splits, or None for anything but what this key's decoding wrote: an
    unreadable or foreign file (tensors only, `weights_only=True`: no pickled code runs), another
    key's file, tensors that are not uint8 images of one shape, or contents whose digest differ.
    None means: decode again, and overwrite the file."""
    try:
        cached = files.load_tensors(path)
    except files.RefusedFile:  # damaged, truncated, foreign: never trusted
        return None
    if not (
        isinstance(cached, dict)
        and cached.get("key") == key
        and isinstance(cached.get("meta"), dict)
        and isinstance(cached["meta"].get("image_column"), str)
        and cached["meta"].get("channels") in (1, 3)
        and isinstance(cached.get("splits"), dict)
        and "train" in cached["splits"]
    ):
        return None
    splits = cached["splits"]
    if not all(
        isinstance(name, str) and torch.is_tensor(t) and t.dtype == torch.uint8 and t.dim() == 4
        for name, t in splits.items()
    ):
        return None
    if len({tuple(t.shape[1:]) for t in splits.values()}) != 1:
        return None
    labels = cached.get("labels")
    if labels is not None and not (
        isinstance(labels, dict)
        and set(labels) == set(splits)
        and all(
            torch.is_tensor(labels[s])
            and labels[s].dtype == torch.int64
            and labels[s].shape == (len(splits[s]),)
            for s in splits
        )
    ):
        return None
    if (labels is None) != ("labels_missing" in cached["meta"]):
        return None
    if cached.get("digest") != _splits_digest(splits, labels):
        return None
    if any(t.shape[1] != cached["meta"]["channels"] for t in splits.values()):
        return None
    return splits, labels, cached["meta"]


def _splits_digest(splits: dict[str, torch.Tensor], labels: dict | None = None) -> str:
    tensors = [splits[name] for name in sorted(splits)]
    tensors += [labels[name] for name in sorted(labels)] if labels else []
    return content_fingerprint(*tensors) + str(sorted(splits))


def decode_split(loaded: dict, split: str, column: str | None, name: str) -> torch.Tensor:
    """One split's images as a run decodes them, at their native size."""
    column = _image_column(loaded["train" if "train" in loaded else split], column, name)
    mode, _ = _channel_mode(loaded, column, None)
    return _to_uint8(loaded[split], column, None, name, mode)


def _image_column(dataset, column: str | None, name: str) -> str:
    import datasets

    if column is not None:
        if column not in dataset.column_names:
            raise UserInputError(
                f"dataset '{name}' has no column '{column}' (columns: "
                f"{', '.join(dataset.column_names)}); set data.image_column"
            )
        return column
    for key, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            return key
    raise UserInputError(
        f"dataset '{name}' has no image column (columns: {', '.join(dataset.column_names)}); "
        "set data.image_column"
    )


def _to_uint8(
    dataset, column: str | None, image_size: int | None, name: str, mode: str
) -> torch.Tensor:
    from PIL import Image, ImageOps

    column = _image_column(dataset, column, name)
    dataset = dataset.select_columns([column])
    arrays = []
    for row in dataset:
        image = row[column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image).squeeze())
        image = image.convert(mode)
        if image_size:
            image = ImageOps.fit(image, (image_size, image_size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.uint8))
    if not arrays:
        raise UserInputError(f"dataset '{name}' has an empty split")
    try:
        stacked = np.stack(arrays)
    except ValueError:
        raise UserInputError(
            f"images of dataset '{name}' differ in size; set data.image_size"
        ) from None
    stacked = stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def content_fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]
