"""vaebench: VAEGAN vs BetaVAE vs VQVAE, trained with pythae, under the metrics of METRICS.md."""

__version__ = "0.1.0"
