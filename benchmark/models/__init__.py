"""The model-family registry: ``FAMILIES.get("vaegan")``."""

from benchmark.models import betavae, vaegan, vqvae
from benchmark.models.family import BatchEval, Family
from benchmark.registry import Registry

FAMILIES: Registry[Family] = Registry("model")
for _module in (betavae, vqvae, vaegan):
    FAMILIES.add(_module.FAMILY.name, _module.FAMILY)

__all__ = ["FAMILIES", "BatchEval", "Family"]
