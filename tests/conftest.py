"""Shared fixtures: tiny in-memory / on-disk datasets and tiny suites. No test needs a network."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub from tests
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# pretrained weights are never fetched by tests (tests of the download path enable it themselves)
os.environ["VAEBENCH_OFFLINE"] = "1"
# decoded datasets are cached per test session, never in the user's ~/.cache, and removed after
os.environ["VAEBENCH_CACHE"] = tempfile.mkdtemp(prefix="vaebench-test-cache-")
atexit.register(shutil.rmtree, os.environ["VAEBENCH_CACHE"], ignore_errors=True)
# pretrained networks: every test sees an empty weights cache (LPIPS, FID n/a, as on a machine
# that never ran `vaebench prepare`); the tests of the real networks read the cache `vaebench
# prepare` filled (`REAL_WEIGHTS`, through the `real_weights` fixture) and skip where it is empty
REAL_WEIGHTS = Path(
    os.environ.get("VAEBENCH_WEIGHTS") or Path.home() / ".cache" / "vaebench" / "weights"
).expanduser()
os.environ["VAEBENCH_WEIGHTS"] = tempfile.mkdtemp(prefix="vaebench-test-weights-")
atexit.register(shutil.rmtree, os.environ["VAEBENCH_WEIGHTS"], ignore_errors=True)

# the tests that compile LaTeX: skipped where TeX Live is missing, except in CI (.ci/run
# installs it and sets VAEBENCH_REQUIRE_TEX, so they cannot skip there)
requires_tex = pytest.mark.skipif(
    shutil.which("pdflatex") is None and not os.environ.get("VAEBENCH_REQUIRE_TEX"),
    reason="TeX Live is not installed (CI installs it and sets VAEBENCH_REQUIRE_TEX)",
)
SHARED_MNIST_MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data" / "hf"
TINY_SETTINGS = [
    "train.epochs=1",
    "train.batch_size=32",
    "data.max_train=128",
    "data.max_test=48",
    "eval.n_gen=40",
    "eval.batch_size=32",
    "eval.fid=true",  # the quick suite turns it off (CPU cost); tiny runs exercise its path
    "eval.prior.epochs=2",
    "eval.prior.channels=8",
    "betavae.width=8",
    "vqvae.width=8",
    "vqvae.num_embeddings=16",
    "vaegan.width=8",
]


def blob_images(n: int, size: int = 28, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Simple structured images (a bright disc on a dark field): learnable, not noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size, channels), dtype=np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        radius = rng.uniform(size * 0.1, size * 0.25)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < radius**2
        images[i][disc] = rng.integers(150, 256, channels)
    return images[..., 0] if channels == 1 else images


def image_dataset(images: np.ndarray):
    import datasets
    from PIL import Image

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in images], "label": list(range(len(images)))},
        features=features,
    )


def write_parquet_repo(folder: Path, n_train=160, n_test=48, size=28, channels=1) -> Path:
    """A folder laid out like a hub repository: <config>/{train,test}-00000-of-00001.parquet."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    image_dataset(blob_images(n_train, size, channels, seed=1)).to_parquet(
        folder / "data" / "train-00000-of-00001.parquet"
    )
    image_dataset(blob_images(n_test, size, channels, seed=2)).to_parquet(
        folder / "data" / "test-00000-of-00001.parquet"
    )
    return folder


@pytest.fixture(scope="session")
def parquet_repo(tmp_path_factory) -> Path:
    return write_parquet_repo(tmp_path_factory.mktemp("hub") / "someone" / "blobs")


@pytest.fixture(scope="session")
def tiny_suite_args(parquet_repo) -> dict:
    """Arguments of resolve_suite for a seconds-long suite over all three families."""
    return {"suite": "quick", "overrides": TINY_SETTINGS, "datasets": [str(parquet_repo)]}


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


class _ToFloat(torch.nn.Module):
    def forward(self, x):
        return x.float() / 255


def random_set_features(device="cpu"):
    """(FID/KID features, None) from a small randomly initialised network, in the shape of a
    MetricNetworks loader. Tests only: a user-facing run never uses a random network."""
    from benchmark.metrics.distribution import SetFeatures

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        _ToFloat(),
        torch.nn.Conv2d(3, 4, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    return SetFeatures(network, "random", device), None


# ---- shared helpers: a record as the runner writes it, a one-line exit, a process's children


def make_record(cell, status: str = "ok", error: str = "RuntimeError: broke", **parts):
    """`cell`'s record as a run makes it (`Record.ok` / `Record.failed`); `parts`: what scoring
    measured (metrics, unavailable, sampler, ...) and the rest (timings, environment, ...)."""
    from benchmark.records.results import Measured, Record

    if status == "failed":
        return Record.failed(cell, error, **parts)
    measured = Measured(**{k: parts.pop(k) for k in Measured.model_fields if k in parts})
    context = {"training": {}, "dataset_info": {}, "environment": {}, "timings": {}}
    return Record.ok(cell, measured, **{**context, **parts})


def write_record(folder: Path, cell, status: str = "ok", **parts):
    """`cell`'s record (`make_record`), written where the runner writes it under `folder`."""
    from benchmark.records.cellfiles import CellFiles

    record = make_record(cell, status, **parts)
    record.write(CellFiles.of(folder, cell).record)
    return record


def one_line_exit(args: list[str], capsys, code: int = 2) -> str:
    """`vaebench ARGS` exits with `code` and says why in one line on stderr, no traceback."""
    from benchmark.cli import main

    assert main(args) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (read from /proc; Linux only)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone while we read
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The `pids` still alive after up to `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if Path(f"/proc/{p}").exists()]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    return alive


def provisioned(network) -> bool:
    """Whether `vaebench prepare` has put the network's pinned tensors in the real cache."""
    return (REAL_WEIGHTS / network.cache_path().name).is_file()


@pytest.fixture
def real_weights(monkeypatch):
    """The real weights cache; a test that needs a network there calls `need(network)`, which
    skips with the command that provisions it."""

    def need(*networks):
        missing = [n.title for n in networks if not provisioned(n)]
        if missing:
            pytest.skip(
                f"{', '.join(missing)} not provisioned in {REAL_WEIGHTS}: run `vaebench "
                "prepare --set eval.fid=true` (and `--set eval.lpips_net=alex`)"
            )

    monkeypatch.setenv("VAEBENCH_WEIGHTS", str(REAL_WEIGHTS))
    return need
