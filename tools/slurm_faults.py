"""What vaebench prints for each SLURM fault, and how long after the fault it said it.

    bash tools/slurm-local.sh up
    python tools/slurm_faults.py DATASET OUT     # DATASET: a small dataset folder or name

Each fault is one `vaebench run --executor slurm` of one long CPU cell; the fault is done to it
once its job is running. The tests (`pytest -m slurm`) check the same faults; this prints the
lines and timings for a person to read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DATA, OUT = sys.argv[1], Path(sys.argv[2]).resolve()
SETTINGS = [
    f"--set={s}"
    for s in (
        "train.epochs=5000",
        "train.batch_size=32",
        "data.max_train=128",
        "data.max_test=48",
        "eval.n_gen=40",
        "train.device=cpu",
        "train.threads=1",
    )
]
# a cluster whose sinfo promises more than its nodes have: the job is submitted, then pends
OVERSTATED = (
    "import sys, benchmark.running.executors.slurm_cluster as s, benchmark.cli as c;"
    "s.read_partition = lambda name: s.Partition('debug', 4096, 10**7, 0, None);"
    "sys.exit(c.main(sys.argv[1:]))"
)


def start(name: str, *more: str, env=None, python=("-m", "benchmark")) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *python, "run", "--datasets", DATA, "--models", "betavae"]
        + ["--wandb", "off", *SETTINGS, "--out", str(OUT / name), "--executor", "slurm", *more],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        # a terminal's Ctrl-C reaches it even when this script runs in the background
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def job_of(process: subprocess.Popen) -> str:
    for line in process.stdout:
        if line.startswith("submitted "):
            return line.split(": ", 1)[1].strip()
    raise SystemExit("no job was submitted")


def state(job: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-o", "%T", "-j", job], capture_output=True, text=True
    ).stdout.strip()


def until(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.3)


def said(name: str, process: subprocess.Popen, since: float, keep) -> None:
    output = process.communicate()[0]
    lines = [line for line in output.splitlines() if keep(line)]
    took = time.monotonic() - since
    print(f"{name}: exit {process.returncode} after {took:.1f} s: " + " | ".join(lines))


def fault(name: str, act=None, sig=None, env=None) -> None:
    process = start(name, env=env)
    job = job_of(process)
    until(lambda: state(job) == "RUNNING")
    time.sleep(3)  # into training
    since = time.monotonic()
    if act:
        subprocess.run([*act, job], check=True)
    if sig:
        process.send_signal(sig)
    said(name, process, since, lambda line: "FAILED" in line or "cancelled" in line)


def requeue() -> None:
    process = start("requeue", "--set=train.epochs=600", "--checkpoint-every=20")
    job = job_of(process)
    until(lambda: list((OUT / "requeue").rglob("*.resume.pt")))
    since = time.monotonic()
    subprocess.run(["scontrol", "requeue", job], check=True)
    until(lambda: state(job) == "PENDING")
    # SLURM holds a requeued job about two minutes; start it now
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=True)
    said("requeue", process, since, lambda line: " ok in " in line or "FAILED" in line)
    log = next((OUT / "requeue" / "slurm" / job).glob("*_log.out")).read_text()
    print("  job log:", [line.strip() for line in log.splitlines() if "resuming" in line])


def one_liner(name: str, *more: str, env=None, python=("-m", "benchmark")) -> None:
    since = time.monotonic()
    process = start(name, *more, env=env, python=python)
    said(name, process, since, lambda line: ": error: " in line)


fault("scancel-with-accounting", act=["scancel"])
shims = OUT / "shims"
shims.mkdir(parents=True, exist_ok=True)
(shims / "sacct").write_text("#!/bin/sh\nexit 1\n")
(shims / "sacct").chmod(0o755)
no_accounting = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
fault("scancel-without-accounting", act=["scancel"], env=no_accounting)
requeue()
fault("sigterm", sig=signal.SIGTERM)
fault("ctrl-c", sig=signal.SIGINT)
one_liner("impossible-cpus", "--set=slurm.cpus_per_job=4000")
one_liner("pending-forever", "--set=slurm.cpus_per_job=64", python=("-c", OVERSTATED))
conf = OUT / "slurm.conf"
conf.write_text(Path("/etc/slurm/slurm.conf").read_text() + "\nSlurmctldPort=1\n")
one_liner("unreachable", env={**os.environ, "SLURM_CONF": str(conf)})
