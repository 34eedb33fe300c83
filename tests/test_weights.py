"""Pretrained weights: hash-checked before any read, read without unpickling code, downloaded
only when allowed, and recorded as unavailable with the reason otherwise."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import urllib.error
import urllib.request

import pytest
import torch

from benchmark.data import weights
from benchmark.metrics import registry as metrics


class Planted:
    """A pickle that creates a marker file when unpickled: what an attacker would plant."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub" / "checkpoints"


def plant(path, marker):
    with open(path, "wb") as stream:
        pickle.dump({"features.0.weight": Planted(marker)}, stream)


def test_quirk_torchvision_cache_path_unpickles_a_planted_file(torch_home, tmp_path):
    """Why we never let lpips/torchvision read the cache: torch.hub's loader unpickles whatever
    sits at the VGG16 path (no hash check for a cached file, weights_only=False)."""
    marker = tmp_path / "ran"
    plant(torch_home / weights.VGG16.file_name, marker)
    with pytest.raises(Exception):  # noqa: B017 - the state dict is junk; the code already ran
        torch.hub.load_state_dict_from_url(weights.VGG16.url, model_dir=str(torch_home))
    assert marker.exists()


def test_a_planted_vgg16_file_is_refused_and_its_code_never_runs(torch_home, tmp_path):
    marker = tmp_path / "ran"
    plant(torch_home / weights.VGG16.file_name, marker)
    network, reason = metrics.LPIPS.load()
    assert network is None
    assert "refused without loading it" in reason and "SHA-256" in reason
    assert not marker.exists()


def test_a_planted_inception_file_is_refused_under_either_cached_name(torch_home, tmp_path):
    from benchmark.metrics.distribution import InceptionFeatures

    marker = tmp_path / "ran"
    plant(torch_home / weights.INCEPTION_V3.aliases[0], marker)
    extractor, reason = InceptionFeatures.load()
    assert extractor is None and "refused without loading it" in reason
    assert not marker.exists()


def fake_weights(tmp_path, state: dict) -> tuple[weights.PretrainedWeights, bytes]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    spec = dataclasses.replace(
        weights.VGG16, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload)
    )
    return spec, payload


def vgg16_features_state(seed: int = 0) -> dict:
    from torchvision.models import vgg16

    torch.manual_seed(seed)
    return {k: v for k, v in vgg16().state_dict().items() if k.startswith("features.")}


def test_lpips_backbone_comes_from_the_verified_file(torch_home, tmp_path, monkeypatch):
    state = vgg16_features_state()
    spec, payload = fake_weights(tmp_path, state)
    (torch_home / spec.file_name).write_bytes(payload)
    monkeypatch.setattr(weights, "VGG16", spec)
    network, reason = metrics.LPIPS.load()
    assert reason is None
    slices = network.net.net.state_dict()
    assert torch.equal(slices["slice1.0.weight"], state["features.0.weight"])
    assert torch.equal(slices["slice5.28.bias"], state["features.28.bias"])
    x = torch.rand(2, 1, 32, 32)
    assert network(x, x).abs().max() < 1e-6 and (network(x, x.flip(-1)) > 0).all()


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_missing_weights_are_downloaded_and_checked(torch_home, tmp_path, monkeypatch):
    spec, payload = fake_weights(tmp_path, {"w": torch.ones(3)})
    monkeypatch.delenv(weights.OFFLINE_ENV)
    urls = []

    def serve(url, timeout):
        urls.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    state = weights.load_state_dict(spec)
    assert urls == [spec.url] and torch.equal(state["w"], torch.ones(3))
    assert (torch_home / spec.file_name).read_bytes() == payload


def test_a_download_with_the_wrong_hash_is_discarded(torch_home, tmp_path, monkeypatch):
    spec, _ = fake_weights(tmp_path, {"w": torch.ones(3)})
    monkeypatch.delenv(weights.OFFLINE_ENV)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"evil"))
    with pytest.raises(weights.WeightsUnavailable, match="discarded"):
        weights.verified_path(spec)
    assert list(torch_home.iterdir()) == []  # neither the file nor a temporary is left


def test_without_network_the_reason_says_so(torch_home, monkeypatch):
    monkeypatch.delenv(weights.OFFLINE_ENV)

    def no_network(url, timeout):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    network, reason = metrics.LPIPS.load()
    assert network is None
    assert "could not be downloaded from https://download.pytorch.org" in reason
    assert "Name or service not known" in reason and weights.VGG16.sha256 in reason


def test_offline_mode_never_opens_a_connection(torch_home, monkeypatch):
    def refuse(url, timeout):
        raise AssertionError("no connection may be opened offline")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(weights.WeightsUnavailable, match="VAEBENCH_OFFLINE=1"):
        weights.verified_path(weights.INCEPTION_V3)
