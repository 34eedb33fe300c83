"""The classifiers vaebench ships for its built-in labelled datasets: the pinned tensors, the
same features on every machine, and what a run does with them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmark.config import DataConfig
from benchmark.data.catalogue import DATASETS
from benchmark.data.loading import load_image_splits
from benchmark.metrics import classifier
from benchmark.running.resources import realism_reference
from conftest import SHARED_MNIST_MIRROR

FINGERPRINTS = json.loads(
    (Path(__file__).parent / "data" / "classifier_fingerprints.json").read_text()
)
SHIPPED = [name for name, spec in DATASETS.items() if spec.classifier_sha256]


def test_every_built_in_labelled_dataset_ships_its_classifier():
    assert SHIPPED == ["mnist-5k", "mnist", "fashion_mnist"]


def splits_of(name: str):
    if DATASETS[name].hub_id is None:
        return load_image_splits(name, DataConfig())
    folder = SHARED_MNIST_MIRROR / DATASETS[name].hub_id
    if not folder.is_dir():
        pytest.skip(f"no mirror of {name} at {folder}")
    return load_image_splits(name, DataConfig(max_train=10), str(SHARED_MNIST_MIRROR))


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_weights_give_the_stored_features(name):
    """The file's tensors hash to the catalogue's pin, and their features of the dataset's
    first test images are the ones stored when they were trained (to 1e-4: inference is
    robust to float paths; training is not, which is why the weights are shipped)."""
    data = splits_of(name)
    shipped = classifier.shipped(name, tuple(data.test.shape[1:]))
    assert shipped.info["sha256"] == DATASETS[name].classifier_sha256
    assert shipped.info["source"] == "shipped"
    stored = torch.tensor(FINGERPRINTS[name]["features"])
    features = shipped.features(data.test[: len(stored)])
    torch.testing.assert_close(features, stored, rtol=1e-4, atol=1e-4)


def test_cfd_is_the_same_with_one_thread_and_two():
    data = splits_of("mnist-5k")
    results = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            reference, reason = realism_reference("mnist-5k", data, "cpu")
            results.append(reference.cfd_of(reference.classifier.features(data.train[:1000])))
        finally:
            torch.set_num_threads(before)
    assert reason is None
    assert results[0] == pytest.approx(results[1], abs=1e-4)


def test_a_run_on_a_built_in_dataset_uses_the_shipped_classifier_and_trains_none(monkeypatch):
    monkeypatch.setattr(classifier, "train_classifier", lambda *a, **k: pytest.fail("trained"))
    data = splits_of("mnist-5k")
    reference, reason = realism_reference("mnist-5k", data, "cpu")
    assert reason is None
    assert reference.classifier.info["sha256"] == DATASETS["mnist-5k"].classifier_sha256
    assert reference.settings(1000, 1000)["source"] == "shipped"


def test_other_images_of_a_built_in_dataset_train_their_own():
    """Resized images are not what the shipped classifier saw: None, and one is trained."""
    assert classifier.shipped("mnist-5k", (1, 32, 32)) is None


def test_a_damaged_shipped_file_is_refused_in_one_line(tmp_path, monkeypatch):
    shutil.copytree(classifier.SHIPPED, tmp_path / "classifiers")
    path = tmp_path / "classifiers" / "mnist-5k.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-8:] = b"\0" * 8  # the last tensor's last bytes
    path.write_bytes(bytes(raw))
    monkeypatch.setattr(classifier, "SHIPPED", tmp_path / "classifiers")
    reference, reason = realism_reference("mnist-5k", splits_of("mnist-5k"), "cpu")
    assert reference is None
    assert reason.startswith("failed: ") and "not the pinned classifier" in reason
    assert "reinstall vaebench" in reason


def test_a_classifier_trained_here_sees_the_full_dataset_whatever_max_train():
    """One feature space per dataset: `data.max_train` and `max_test` subsample the run, not
    the classifier's training split."""
    from benchmark.running.resources import RunSettings, SharedResources
    from benchmark.running.suites import expand_cells, resolve_suite

    (cell,) = expand_cells(
        resolve_suite("quick", ["data.max_train=100", "data.max_test=50"], ["betavae"])
    )
    shared = SharedResources(RunSettings())
    run_data = shared.data(cell)
    full = shared._full_dataset(cell, run_data)
    assert len(run_data.train) == 100 and len(run_data.test) == 50
    assert len(full.train) + len(full.val) == 4000 and len(full.test) == 1000
    assert classifier.full_training_split(full)[0].shape[0] == 4000
