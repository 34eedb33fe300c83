"""Pretrained weights the metrics need (LPIPS's VGG16, FID's Inception-v3), fetched safely.

Every file is checked against its published SHA-256 *before* anything reads it, and is then
read with `torch.load(weights_only=True)`: a file planted at the cache path is refused, and no
pickle code in it runs. A missing file is downloaded into the torch cache when the network is
reachable (never when `VAEBENCH_OFFLINE=1`); otherwise `WeightsUnavailable` says why, and the
metric is recorded as unavailable with that reason.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark import files

OFFLINE_ENV = "VAEBENCH_OFFLINE"
DOWNLOAD_TIMEOUT_S = 30  # per socket operation, not for the whole file
CHUNK = 1 << 20


class WeightsUnavailable(Exception):
    """The weights are neither cached (with the right hash) nor downloadable; the message is the
    reason recorded in the result."""


@dataclass(frozen=True)
class PretrainedWeights:
    title: str
    file_name: str  # under $TORCH_HOME/hub/checkpoints, the name torch.hub would give it
    url: str
    sha256: str  # published digest of the whole file
    size: int  # bytes
    # other names the same bytes are cached under by other tools (checked by hash too)
    aliases: tuple[str, ...] = field(default=())

    def cache_dir(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints"

    def path(self) -> Path:
        return self.cache_dir() / self.file_name


# torchvision's ImageNet VGG16, LPIPS's backbone (lpips ships only its linear heads)
VGG16 = PretrainedWeights(
    title="torchvision VGG16 (ImageNet) weights",
    file_name="vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    size=553_433_881,
)

# The TF-ported Inception-v3 of the original FID code, as torch-fidelity publishes it;
# pytorch-fid publishes the same bytes under another name.
INCEPTION_V3 = PretrainedWeights(
    title="FID Inception-v3 weights (TF 2015-12-05, torch-fidelity)",
    file_name="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    size=95_628_359,
    aliases=("pt_inception-2015-12-05-6726825d.pth",),
)

ALL_WEIGHTS = (VGG16, INCEPTION_V3)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")


def verified_path(weights: PretrainedWeights, download: bool = True) -> Path:
    """The cached file, hash-checked; downloaded first when missing and allowed."""
    candidates = [weights.path()] + [weights.cache_dir() / name for name in weights.aliases]
    for path in candidates:
        if path.is_file():
            actual = sha256_of(path)
            if actual != weights.sha256:
                raise WeightsUnavailable(
                    f"{weights.title}: {path} has SHA-256 {actual[:16]}..., not the published "
                    f"{weights.sha256[:16]}...; refused without loading it (delete the file to "
                    "fetch it again)"
                )
            return path
    where = weights.path()
    if not download or offline():
        why = f"{OFFLINE_ENV}=1" if offline() else "downloads disabled"
        raise WeightsUnavailable(
            f"{weights.title} not found at {where} ({why}); copy the file there "
            f"(SHA-256 {weights.sha256}, from {weights.url})"
        )
    try:
        download_verified(weights, where)
    except OSError as error:  # URLError, timeouts, disk errors
        raise WeightsUnavailable(
            f"{weights.title} not found at {where} and could not be downloaded from "
            f"{weights.url} ({_reason(error)}); copy the file there (SHA-256 {weights.sha256})"
        ) from None
    return where


def download_verified(weights: PretrainedWeights, destination: Path) -> None:
    """Stream the file into a temporary beside `destination`, hashing as it arrives; only a file
    with the published digest is moved into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(prefix=destination.name, dir=destination.parent)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(weights.url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != weights.sha256:
            raise OSError(
                f"downloaded file has SHA-256 {digest.hexdigest()[:16]}..., not the published "
                f"{weights.sha256[:16]}...; discarded"
            )
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def load_state_dict(weights: PretrainedWeights, download: bool = True) -> dict:
    """The verified file's state dict, read without unpickling code (weights_only=True)."""
    path = verified_path(weights, download)
    return files.load_tensors(path)


def _reason(error: OSError) -> str:
    reason = getattr(error, "reason", None)  # URLError wraps the socket error
    return str(reason if reason is not None else error)
