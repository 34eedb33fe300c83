"""Where a run's cells execute, each executor one module registered by name (`EXECUTORS`); the
interface is `base.py`.

- `local.py`: here, one cell after the other, or with `--jobs N` in `workers.py`'s N worker
  processes; a sweep's trials as processes here;
- `slurm.py`: one SLURM job per cell (a job array), or per sweep trial, through submitit;
  what the cluster offers and how its jobs are watched is `slurm_cluster.py`.

`vaebench run --executor NAME` (and `vaebench sweep --executor NAME`) picks one; its choices and
options come from this registry.
"""

from __future__ import annotations

from benchmark.registry import Registry
from benchmark.running.executors import local, slurm
from benchmark.running.executors.base import ExecutorPlugin

DEFAULT = local.PLUGIN.name
EXECUTORS: Registry[ExecutorPlugin] = Registry("executor")
for _plugin in (local.PLUGIN, slurm.PLUGIN):
    EXECUTORS.add(_plugin.name, _plugin)
