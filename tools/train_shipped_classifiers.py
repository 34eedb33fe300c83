"""Train the classifiers vaebench ships for its built-in labelled datasets, once.

    python tools/train_shipped_classifiers.py --data-mirror ../shared/data/hf

For each dataset: load it at its pinned content (default data settings, the full labelled
training split), train the recipe (`metrics.classifier.recipe_for`) in fp32 on the CPU with
one thread, write `benchmark/classifiers/NAME.safetensors` (tensors and what a record says
about them; safetensors: no code runs on reading) and print the SHA-256 to pin in the
catalogue (`DatasetSpec.classifier_sha256`). It also writes the features of each dataset's
first test images (`tests/data/classifier_fingerprints.json`), which the tests hold the
shipped files to on every machine.

Training is not bitwise reproducible across CPUs: rerunning this elsewhere gives other
weights (and other cfds), which is why the weights are shipped rather than trained by users.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.config import DataConfig  # noqa: E402
from benchmark.data.catalogue import DATASETS  # noqa: E402
from benchmark.data.loading import load_image_splits  # noqa: E402
from benchmark.metrics import classifier  # noqa: E402

FINGERPRINTS = ROOT / "tests" / "data" / "classifier_fingerprints.json"
FINGERPRINT_IMAGES = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="mnist-5k,mnist,fashion_mnist")
    parser.add_argument("--data-mirror", help="a local mirror of the hub datasets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fingerprints = json.loads(FINGERPRINTS.read_text()) if FINGERPRINTS.is_file() else {}
    classifier.SHIPPED.mkdir(exist_ok=True)
    for name in args.datasets.split(","):
        spec = DATASETS[name]
        data = load_image_splits(name, DataConfig(), args.data_mirror)
        recipe = classifier.recipe_for(tuple(data.test.shape[1:]), int(data.info["classes"]))
        net, state, info = classifier.trained(recipe, data)
        info.update(
            source="shipped",
            trained_by="tools/train_shipped_classifiers.py",
            dataset=name,
            content=spec.content or data.info["fingerprint"],
            machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
            torch=torch.__version__,
            threads=1,
        )
        path = classifier.SHIPPED / f"{name}.safetensors"
        classifier._write(path, state, info)
        features = classifier.DatasetClassifier(net, recipe, info).features(
            data.test[:FINGERPRINT_IMAGES]
        )
        fingerprints[name] = {"sha256": info["sha256"], "features": features.tolist()}
        print(
            f"{name}: test accuracy {info['test_accuracy']:.4f} on {info['n_test']} images, "
            f"trained on {info['n_train']} in {info['train_seconds']:.0f} s; "
            f"classifier_sha256={info['sha256']!r} ({path.stat().st_size:,} bytes)",
            flush=True,
        )
    FINGERPRINTS.write_text(json.dumps(fingerprints, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
