"""The validity table of docs/metrics.md ("Realism on every machine"): cfd, precision and recall
of real, blurred, noisy, mode-dropped and repeated mnist-5k images against its test set, in the
features of the classifier vaebench uses for mnist-5k (the shipped one).

    python tools/measure_classifier_validity.py     # 2 CPU threads, about 10 s

tests/test_classifier.py checks the order and bounds of the same measurements.
"""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF

from benchmark.config import DataConfig
from benchmark.data.loading import load_image_splits
from benchmark.metrics.classifier import ClassifierReference, shipped

N = 1000


def main() -> None:
    torch.set_num_threads(2)
    data = load_image_splits("mnist-5k", DataConfig())
    classifier = shipped("mnist-5k", tuple(data.test.shape[1:]))
    assert classifier is not None, "the shipped mnist-5k classifier"
    reference = ClassifierReference.of(classifier, data.test)
    info = classifier.info
    print(
        f"classifier {info['recipe']['name']}, {info.get('source')}, test accuracy "
        f"{info['test_accuracy']:.3f}, sha256 {info['sha256'][:16]}"
    )
    images = data.train[:N].float() / 255
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    sets = {
        "real training images": images,
        **{f"Gaussian blur σ = {s:g}": TF.gaussian_blur(images, 9, s) for s in (1.0, 2.0, 3.0)},
        **{f"Gaussian noise σ = {s:g}": (images + s * noise).clamp(0, 1) for s in (0.2, 0.4, 0.8)},
        "digits 0–4 only (mode dropping)": data.train[data.labels["train"] < 5][:N],
        "one image repeated": data.train[:1].expand(N, -1, -1, -1),
    }
    print("| images | cfd | precision | recall |\n|---|---:|---:|---:|")
    for name, batch in sets.items():
        features = reference.classifier.features(batch)
        precision, recall = reference.precision_recall_of(features)
        print(f"| {name} | {reference.cfd_of(features):.1f} | {precision:.2f} | {recall:.2f} |")


if __name__ == "__main__":
    main()
