"""Realism without downloaded weights: the dataset's own classifier (docs/metrics.md).

A small CNN trained on the dataset's full labelled training split (train and val, whatever
the run's `data.max_train`) with a fixed recipe that depends only on the image shape and the
number of classes. Its penultimate layer is the feature space of `cfd` (Fréchet distance, the
project's FID code) and of `precision`/`recall` (k-NN manifolds, Kynkäänniemi et al. 2019,
torch-fidelity's implementation). It never sees generated images.

A feature network has to be the same tensors on every machine for its distances to compare
(training is not reproducible across CPUs and GPUs; inference is, to 1e-4): the built-in
labelled datasets ship theirs (`benchmark/classifiers/NAME.safetensors`, trained once by
`tools/train_shipped_classifiers.py`, SHA-256 pinned in the catalogue). Any other dataset's
is trained here, once per content and recipe, and cached; the record says which
(`source`), and its weights' SHA-256. Below the recipe's accuracy floor the metrics are
unavailable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from benchmark import files
from benchmark.data.catalogue import DATASETS
from benchmark.data.decoding import cache_dir
from benchmark.metrics.distribution import frechet_distance, to_uint8

FORMAT = 1  # bump when the network, training or the cached file's layout changes
NEIGHBOURHOOD = 3  # k of the k-NN manifolds (Kynkäänniemi et al. 2019)
FEATURE_BATCH = 500


@dataclass(frozen=True)
class Recipe:
    """How the classifier is built and trained: a function of the image shape and the number
    of classes only, so that every run on a dataset gets the same classifier."""

    name: str
    channels: tuple[int, ...]  # conv widths, one 2x-downsampling block each
    feature_dim: int  # the penultimate layer: the feature space
    epochs: int
    batch_size: int
    learning_rate: float  # Adam
    seed: int
    classes: int

    @property
    def accuracy_floor(self) -> float:
        """Half way from chance to perfect: a classifier below it has not learned the classes
        well enough for its features to say anything about realism."""
        return round(0.5 + 0.5 / self.classes, 4)


def recipe_for(shape: tuple[int, int, int], classes: int) -> Recipe:
    """Two conv blocks (conv 3x3, ReLU, max-pool) up to 32x32 pixels (MNIST, Fashion-MNIST,
    CIFAR-10), three above; then a 4x4 average pool, the 128-d feature layer and the head."""
    _, height, width = shape
    if max(height, width) <= 32:
        return Recipe("cnn2-v1", (32, 64), 128, 10, 64, 2e-3, 0, classes)
    return Recipe("cnn3-v1", (32, 64, 128), 128, 10, 64, 2e-3, 0, classes)


class ClassifierNet(nn.Module):
    def __init__(self, recipe: Recipe, in_channels: int) -> None:
        super().__init__()
        blocks, width = [], in_channels
        for out in recipe.channels:
            blocks += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.penultimate = nn.Sequential(nn.Linear(width * 16, recipe.feature_dim), nn.ReLU())
        self.head = nn.Linear(recipe.feature_dim, recipe.classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.penultimate(self.body(x * 2 - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def quantised(images: torch.Tensor) -> torch.Tensor:
    """Images quantised as for every set-level metric (`distribution.to_uint8`), as floats in
    [0, 1]: the classifier's input."""
    return to_uint8(images).float().div(255)


class DatasetClassifier:
    """A trained classifier, its recipe, and what the record says about it."""

    def __init__(self, net: ClassifierNet, recipe: Recipe, info: dict, device="cpu") -> None:
        self.net = net.eval().to(device)
        self.recipe = recipe
        self.info = info  # recipe, test_accuracy, accuracy_floor, sha256, trained_on, ...
        self.device = torch.device(device)

    @torch.inference_mode()
    def features(self, images: torch.Tensor, batch_size: int = FEATURE_BATCH) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] (or uint8) -> (N, feature_dim) float32 on the CPU."""
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = quantised(images[start : start + batch_size].to(self.device))
            chunks.append(self.net.features(batch).float().cpu())
        return torch.cat(chunks)

    @property
    def accurate_enough(self) -> bool:
        return self.info["test_accuracy"] >= self.recipe.accuracy_floor


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the weights as safetensors bytes (no metadata): equal weights, equal hash."""
    from safetensors.torch import save

    return hashlib.sha256(save({k: v.contiguous().cpu() for k, v in state.items()})).hexdigest()


def train_classifier(
    recipe: Recipe, train: tuple[torch.Tensor, torch.Tensor], device="cpu"
) -> tuple[ClassifierNet, float]:
    """The recipe's training, on `device`, in fp32: Adam, fixed epochs, a seeded shuffle."""
    images, labels = train
    generator = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = ClassifierNet(recipe, images.shape[1])
    net.to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=recipe.learning_rate)
    started = time.perf_counter()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            x = quantised(images[index].to(device))
            loss = nn.functional.cross_entropy(net(x), labels[index].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return net.eval(), time.perf_counter() - started


@torch.inference_mode()
def accuracy(net: ClassifierNet, images: torch.Tensor, labels: torch.Tensor, device) -> float:
    correct = 0
    for start in range(0, len(images), FEATURE_BATCH):
        x = quantised(images[start : start + FEATURE_BATCH].to(device))
        predicted = net(x).argmax(dim=1).cpu()
        correct += int((predicted == labels[start : start + FEATURE_BATCH]).sum())
    return correct / len(images)


def labels_digest(labels: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for split in sorted(labels):
        digest.update(split.encode() + labels[split].numpy().tobytes())
    return digest.hexdigest()[:16]


SHIPPED = Path(__file__).resolve().parents[1] / "classifiers"  # benchmark/classifiers/


class ShippedClassifierDamaged(Exception):
    """The package's classifier file is not the pinned one: an install to repair."""


def shipped(dataset: str, shape: tuple[int, ...], device="cpu") -> DatasetClassifier | None:
    """The classifier vaebench ships for a built-in dataset, when this run's images have the
    shape it was trained on; None otherwise (then one is trained here)."""
    spec = DATASETS.get(dataset)
    if spec is None or spec.classifier_sha256 is None:
        return None
    path = SHIPPED / f"{dataset}.safetensors"
    state, info = _read_file(path)
    if state is None or weights_sha256(state) != spec.classifier_sha256:
        raise ShippedClassifierDamaged(
            f"{path} is missing or not the pinned classifier (SHA-256 "
            f"{spec.classifier_sha256[:16]}); reinstall vaebench"
        )
    if tuple(info["input_shape"]) != tuple(shape):
        return None  # resized or re-channelled images: not what it was trained on
    recipe = Recipe(**{**info["recipe"], "channels": tuple(info["recipe"]["channels"])})
    net = ClassifierNet(recipe, shape[0])
    net.load_state_dict(state)
    return DatasetClassifier(net, recipe, {**info, "source": "shipped"}, device)


def full_training_split(data) -> tuple[torch.Tensor, torch.Tensor]:
    """The labelled images the classifier trains on: the run's train and val splits (a run
    with `data.max_train` passes the full dataset's)."""
    return torch.cat([data.train, data.val]), torch.cat([data.labels["train"], data.labels["val"]])


def load_or_train(data, device="cpu", log=None) -> DatasetClassifier:
    """A classifier trained on this machine: from the cache when this content and recipe
    trained one before, else trained now (on `device`) and cached. `data`: ImageSplits with
    labels, the full dataset (not the run's `max_train` subset)."""
    recipe = recipe_for(tuple(data.test.shape[1:]), int(data.info["classes"]))
    key = hashlib.sha256(
        json.dumps(
            [FORMAT, asdict(recipe), data.info["fingerprint"], labels_digest(data.labels)]
        ).encode()
    ).hexdigest()[:24]
    folder = cache_dir()
    path = folder / "classifiers" / f"{key}.safetensors" if folder else None
    if path is not None and path.exists():
        cached = _read(path, recipe, data.test.shape[1])
        if cached is not None:
            net, info = cached
            return DatasetClassifier(net, recipe, info, device)
    name = data.info.get("name", "the dataset")
    if log is not None:
        log(f"training {name}'s own classifier ({recipe.name}, for cfd, precision and recall)")
    net, state, info = trained(recipe, data, device)
    seconds = info["train_seconds"]
    if log is not None:
        log(
            f"{name}'s own classifier: test accuracy {info['test_accuracy']:.3f} (floor "
            f"{recipe.accuracy_floor}), trained in {seconds:.1f} s"
        )
    if path is not None:
        with contextlib.suppress(OSError):  # a read-only cache must not stop a run
            _write(path, state, info)
    return DatasetClassifier(net, recipe, info, device)


def trained(recipe: Recipe, data, device="cpu") -> tuple[ClassifierNet, dict, dict]:
    """The recipe trained on `data`'s full training split: (net, state, info for records)."""
    images, labels = full_training_split(data)
    net, seconds = train_classifier(recipe, (images, labels), device)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    info = {
        "recipe": json.loads(json.dumps(asdict(recipe))),
        "test_accuracy": accuracy(net, data.test, data.labels["test"], device),
        "accuracy_floor": recipe.accuracy_floor,
        "sha256": weights_sha256(state),
        "source": "trained on this machine",
        "trained_on": torch.device(device).type,
        "train_seconds": round(seconds, 2),
        "n_train": len(images),
        "n_test": len(data.test),
        "input_shape": list(data.test.shape[1:]),
    }
    return net, state, info


def _write(path: Path, state: dict, info: dict) -> None:
    from safetensors.torch import save_file

    metadata = {"vaebench": json.dumps(info, sort_keys=True)}
    files.write_with(path, lambda temporary: save_file(state, temporary, metadata=metadata))


def _read(path: Path, recipe: Recipe, in_channels: int):
    """(net, info) from a cached file, or None for anything else (damaged, foreign, another
    recipe, weights whose hash differs from the one recorded): then it is trained again."""
    state, info = _read_file(path)
    if state is None:
        return None
    try:
        net = ClassifierNet(recipe, in_channels)
        net.load_state_dict(state)
    except Exception:  # noqa: BLE001 - any unreadable or foreign file is trained again
        return None
    as_json = json.loads(json.dumps(asdict(recipe)))  # tuples come back as lists
    info.setdefault("source", "trained on this machine")  # files cached before it was said
    if info.get("recipe") != as_json or info.get("sha256") != weights_sha256(state):
        return None
    return net.eval(), info


def _read_file(path: Path) -> tuple[dict | None, dict | None]:
    """(tensors, info) of a classifier file (safetensors: no code runs), or (None, None)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            info = json.loads((handle.metadata() or {})["vaebench"])
            state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception:  # noqa: BLE001 - missing, damaged or foreign
        return None, None
    return state, info


@dataclass
class ClassifierReference:
    """The test set's classifier features, against which a cell's image sets are measured."""

    classifier: DatasetClassifier
    test_features: torch.Tensor

    @classmethod
    def of(cls, classifier: DatasetClassifier, test_images: torch.Tensor) -> ClassifierReference:
        return cls(classifier, classifier.features(test_images))

    def cfd_of(self, features: torch.Tensor) -> float:
        return frechet_distance(features, self.test_features)

    def precision_recall_of(self, features: torch.Tensor) -> tuple[float, float]:
        """Kynkäänniemi et al.: precision, the share of `features` inside the test set's k-NN
        manifold; recall, the share of the test set inside theirs."""
        from torch_fidelity.metric_prc import calculate_precision_recall_part

        return calculate_precision_recall_part(
            features, self.test_features, neighborhood=NEIGHBOURHOOD, batch_size=10_000
        )

    def settings(self, n_recon: int, n_gen: int) -> dict:
        """What the record says about how gen/cfd, recon/cfd, precision and recall were made."""
        return {
            **self.classifier.info,
            "features": f"penultimate layer ({self.classifier.recipe.feature_dim}-d)",
            "k": NEIGHBOURHOOD,
            "n_reference": len(self.test_features),
            "n_recon": n_recon,
            "n_gen": n_gen,
            "quantisation": "uint8, round to nearest",
        }
