"""A third tracker, nowhere in the package: every call a line of `OUT/tracker.jsonl`. It proves
that a tracker is one module and one registration (`TRACKERS.add("jsonl", PLUGIN)`): its
options, each cell's runs, the record's `tracker_run` and the re-scoring update follow."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark.tracking.base import TrackerPlugin, summary_values


class JsonlTracker:
    seconds = 0.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cell = ""

    def _write(self, kind: str, **values) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"kind": kind, "cell": self.cell, **values}) + "\n")

    def start(self, config, environment) -> None:
        self.cell = config.cell_id
        self._write("start", config_hash=config.config_hash())

    def log_step(self, values) -> None:
        self._write("step", values=values)

    def log_epoch(self, summary) -> None:
        self._write("epoch", values=summary)

    def flush(self) -> None:
        pass

    def finish(self, record, images, checkpoint=None) -> None:
        self._write("finish", summary=summary_values(record), images=sorted(images))

    def run_info(self):
        return {"tracker": "jsonl", "path": str(self.path), "mode": "file", "cell": self.cell}


class JsonlPlugin(TrackerPlugin):
    name = "jsonl"
    help = "every call a JSON line in OUT/tracker.jsonl (a test's tracker)"

    def add_run_options(self, parser) -> None:
        parser.add_argument("--jsonl-name", default="tracker.jsonl", help="file name in --out")

    def tracker_factory(self, args, out, log):
        path = Path(out) / args.jsonl_name
        return lambda: JsonlTracker(path)

    def update_run(self, record, log) -> bool:
        tracker = JsonlTracker(Path(record.tracker_run["path"]))
        tracker.cell = record.tracker_run["cell"]
        tracker._write("update", summary=summary_values(record))
        return True


PLUGIN = JsonlPlugin()
