"""vaebench: VAEGAN vs BetaVAE vs VQVAE, trained with pythae, measured as docs/metrics.md says."""

__version__ = "0.1.0"
