"""The dataset's own classifier (docs/metrics.md "Realism on every machine"): validity on real
images, its cache, and the reasons it is unavailable.

The validity numbers below were measured on mnist-5k with the shipped classifier (cnn2-v1, test
accuracy 0.949, 2 CPU threads; `python tools/measure_classifier_validity.py`), 1,000 images
each against the 1,000 test images:

    real training images        cfd 2.6    precision 0.90  recall 0.90
    blur sigma 1 / 2 / 3        cfd 417 / 1137 / 1345, precision 0.57 / 0.06 / 0.01
    noise sigma 0.2 / 0.4 / 0.8 cfd 35 / 197 / 1002,   precision 0.90 / 0.56 / 0.01
    digits 0-4 only             cfd 124    precision 0.91  recall 0.56
    one image repeated          cfd 1371   precision 1.00  recall 0.00

The bounds leave room for other CPUs and thread counts, not for another order.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF

from benchmark.config import DataConfig
from benchmark.data.loading import load_image_splits
from benchmark.metrics import classifier
from benchmark.metrics.classifier import ClassifierReference, load_or_train, recipe_for
from conftest import SHARED_MNIST_MIRROR

N = 1000


@pytest.fixture(scope="module")
def mnist5k():
    return load_image_splits("mnist-5k", DataConfig())


@pytest.fixture(scope="module")
def reference(mnist5k) -> ClassifierReference:
    """The classifier every run uses for mnist-5k: the shipped one."""
    shipped = classifier.shipped("mnist-5k", tuple(mnist5k.test.shape[1:]))
    assert shipped is not None
    with _threads(2):
        return ClassifierReference.of(shipped, mnist5k.test)


class _threads:
    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def measure(reference: ClassifierReference, images: torch.Tensor) -> tuple[float, float, float]:
    features = reference.classifier.features(images)
    precision, recall = reference.precision_recall_of(features)
    return reference.cfd_of(features), precision, recall


def real(mnist5k) -> torch.Tensor:
    return mnist5k.train[:N].float() / 255


def test_the_recipe_reaches_its_floor_on_mnist_5k(reference):
    info = reference.classifier.info
    assert info["test_accuracy"] >= 0.9 > info["accuracy_floor"] == 0.55
    assert info["recipe"]["name"] == "cnn2-v1" and len(info["sha256"]) == 64


def test_real_images_against_the_test_set_are_near_perfect(reference, mnist5k):
    cfd, precision, recall = measure(reference, real(mnist5k))
    assert cfd < 10
    assert precision > 0.85 and recall > 0.85


@pytest.mark.parametrize(
    ("corrupt", "levels"),
    [
        ("blur", [1.0, 2.0, 3.0]),
        ("noise", [0.2, 0.4, 0.8]),
    ],
)
def test_blur_and_noise_raise_cfd_monotonically_and_lower_precision(
    corrupt, levels, reference, mnist5k
):
    images = real(mnist5k)
    generator = torch.Generator().manual_seed(0)

    def corrupted(level: float) -> torch.Tensor:
        if corrupt == "blur":
            return TF.gaussian_blur(images, 9, level)
        noise = torch.randn(images.shape, generator=generator)
        return (images + level * noise).clamp(0, 1)

    measured = [measure(reference, images)] + [measure(reference, corrupted(s)) for s in levels]
    cfds, precisions = [m[0] for m in measured], [m[1] for m in measured]
    assert cfds == sorted(cfds) and cfds[-1] > 50 * cfds[0], cfds
    assert precisions == sorted(precisions, reverse=True), precisions
    assert precisions[-1] < 0.2, precisions


def test_dropping_modes_lowers_recall_not_precision(reference, mnist5k):
    _, _, real_recall = measure(reference, real(mnist5k))
    five_digits = mnist5k.train[mnist5k.labels["train"] < 5][:N]
    _, precision, recall = measure(reference, five_digits)
    assert precision > 0.85
    assert recall < 0.7 and recall < real_recall - 0.2


def test_one_repeated_image_has_no_recall(reference, mnist5k):
    cfd, _, recall = measure(reference, mnist5k.train[:1].expand(N, -1, -1, -1))
    assert recall < 0.01
    assert cfd > 100


def test_the_classifier_is_trained_once_and_read_back_tensors_only(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path))
    data = _small_labelled()
    first = load_or_train(data)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(classifier, "train_classifier", no_training)
    again = load_or_train(data)
    assert again.info == first.info
    state = again.net.state_dict()
    assert classifier.weights_sha256(state) == first.info["sha256"]


def test_a_cached_classifier_whose_weights_were_changed_is_trained_again(tmp_path, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import save_file

    monkeypatch.setenv("VAEBENCH_CACHE", str(tmp_path))
    data = _small_labelled()
    trained = load_or_train(data)
    (path,) = (tmp_path / "classifiers").glob("*.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    state["head.bias"] = state["head.bias"] + 1  # weights that no longer match their hash
    save_file(state, str(path), metadata=metadata)
    calls = []
    original = classifier.train_classifier
    monkeypatch.setattr(
        classifier,
        "train_classifier",
        lambda *a, **k: calls.append(1) or original(*a, **k),
    )
    again = load_or_train(data)
    assert calls == [1] and again.info["sha256"] == trained.info["sha256"]


def _small_labelled(n: int = 256, classes: int = 2, random_labels: bool = False):
    """Bright-left vs bright-right 28x28 images (learnable), or the same with random labels."""
    from benchmark.data.loading import ImageSplits

    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, classes, (n,), generator=generator)
    images = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        images[i, :, :, :14] = 200 if label == 0 else 0
        images[i, :, :, 14:] = 200 if label == 1 else 0
    if random_labels:
        labels = torch.randint(0, classes, (n,), generator=generator)
    half = n // 2
    info = {"name": "halves", "classes": classes, "fingerprint": f"halves-{random_labels}"}
    split_labels = {"train": labels[:half], "val": labels[:0], "test": labels[half:]}
    return ImageSplits(images[:half], images[:0], images[half:], info, split_labels)


def test_a_classifier_below_its_floor_makes_the_metrics_unavailable_with_the_reason():
    from benchmark.running.resources import realism_reference

    data = _small_labelled(classes=10, random_labels=True)
    reference, reason = realism_reference("halves", data, "cpu")
    assert reference is None
    assert "below its recipe's floor of 0.55" in reason and "test accuracy" in reason


def test_a_dataset_without_labels_says_so():
    from benchmark.running.resources import realism_reference

    data = _small_labelled()
    data.labels, data.labels_missing = None, "the dataset has no label column (...)"
    reference, reason = realism_reference("halves", data, "cpu")
    assert reference is None and reason.startswith("no classifier: the dataset has no label")


def test_the_recipe_depends_on_the_image_shape_and_classes_only():
    assert recipe_for((1, 28, 28), 10) == recipe_for((3, 32, 32), 10)
    assert recipe_for((3, 64, 64), 10).name == "cnn3-v1"
    assert recipe_for((1, 28, 28), 2).accuracy_floor == 0.75


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_MNIST_MIRROR / "ylecun" / "mnist").is_dir(),
    reason="the shared MNIST mirror is absent",
)
def test_validity_on_the_shared_mnist_mirror():
    """Full MNIST (the mirror's first 10,000 training images train the classifier: test
    accuracy 0.981), 1,000 images each against the first 1,000 test images:

        real training images   cfd 15.9   precision 0.87  recall 0.90
        blur sigma 2           cfd 1325   precision 0.05
        digits 0-4 only        cfd 161    precision 0.87  recall 0.54
        one image repeated     cfd 2123               recall 0.00

    (With all 10,000 test images and 10,000 images each, real gives cfd 1.3, but blurred
    images reach precision 0.97: a few real outliers' k-NN balls cover them. cfd still sees the
    blur, 1411; docs/metrics.md says so.)"""
    data = load_image_splits(
        str(SHARED_MNIST_MIRROR / "ylecun" / "mnist"), DataConfig(max_train=10_000)
    )
    with _threads(2):
        reference = ClassifierReference.of(load_or_train(data), data.test[:N])
    assert reference.classifier.info["test_accuracy"] > 0.95
    images = data.train[:N].float() / 255
    cfd_real, precision_real, recall_real = measure(reference, images)
    cfd_blur, precision_blur, _ = measure(reference, TF.gaussian_blur(images, 9, 2.0))
    _, precision_five, recall_five = measure(reference, data.train[data.labels["train"] < 5][:N])
    _, _, recall_repeated = measure(reference, data.train[:1].expand(N, -1, -1, -1))
    assert cfd_real < 25 and precision_real > 0.8 and recall_real > 0.85
    assert cfd_blur > 50 * cfd_real and precision_blur < 0.3
    assert precision_five > 0.8 and recall_five < 0.7
    assert recall_repeated < 0.01
