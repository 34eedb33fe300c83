"""Read back what an offline W&B run logged, from its `.wandb` transaction log.

The file is a LevelDB-style log (wandb's datastore format): a 7-byte header (":W&B", magic
0xBEE1, version), then 32 KiB blocks of chunks, each with a 7-byte header (crc32, uint16
length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4); a block's last < 7 bytes are padding.
Each reassembled record is a `wandb_internal_pb2.Record`. wandb 0.31 ships no reader.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    offset, records, pending = HEADER, [], b""
    while offset + HEADER <= len(data):
        space = BLOCK - offset % BLOCK
        if space < HEADER:  # block trailer padding
            offset += space
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            offset += space
            continue
        if offset + HEADER + length > len(data):  # a chunk still being written
            break
        chunk = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records


@dataclass
class LoggedRun:
    run: wandb_internal_pb2.RunRecord | None = None
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # define_metric: name -> MetricRecord
    files: list[str] = field(default_factory=list)
    artifacts: list[wandb_internal_pb2.ArtifactRecord] = field(default_factory=list)


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def complete_records(path: str | Path, timeout: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The records once the run's `exit` record is on disk.

    `run.finish()` can return before wandb-core's writer has drained its queue to the file
    (seen on a loaded CI machine: a finished run's history was missing), so wait for it.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no exit record after {timeout:.0f} s")
        time.sleep(0.1)


def read_run(path: str | Path) -> LoggedRun:
    logged = LoggedRun()
    for record in complete_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            logged.run = record.run
            for item in record.run.config.update:
                logged.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                logged.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            logged.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                logged.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "metric":
            logged.metrics[record.metric.name or record.metric.glob_name] = record.metric
        elif kind == "files":
            logged.files += [f.path for f in record.files.files]
        elif kind == "artifact":
            logged.artifacts.append(record.artifact)
    return logged


def find_runs(wandb_dir: str | Path) -> list[Path]:
    return sorted(Path(wandb_dir).rglob("run-*.wandb"))
