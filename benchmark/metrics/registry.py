"""The metrics of docs/metrics.md: a functional per-image core plus what the report needs.

Every function takes images in [0, 1] of shape (N, C, H, W) and returns a tensor of shape (N,).
Decoder outputs are clamped to [0, 1] before SSIM, GMSD, LPIPS and BCE (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import piq
import torch

from benchmark.data import weights

BCE_EPS = 1e-7
# the evaluation sets, as record keys' prefixes spell them: `recon/` (the test images'
# reconstructions) and `gen/` (generated samples, against their own reconstructions)
SETS = ("recon", "gen")


@dataclass(frozen=True)
class MetricInfo:
    """Everything the report, compare and tracking know about a metric, in one place."""

    key: str
    higher_is_better: bool
    # rankable across families (docs/metrics.md "Ranking"); "gaussian": only between the two
    # Gaussian-latent families
    ranked: str  # "all" | "gaussian" | "never"
    description: str
    group: str = "main"  # "main": the comparison tables; "diagnostic": the diagnostics table
    plotted: bool = False  # one panel of the report's metric bars
    # does `compare` call a move in its bad direction a regression? (adversarial quantities
    # move either way in a healthy run: shown, never judged)
    judged: bool = True
    # a core reconstruction row: with generation's realism rows, the report's headline table
    # (one column of a paper); the other rows go to its table of further rows
    headline: bool = False
    # how the images sit against the data (FID, KID, CFD, precision, recall): in gen/, only
    # these carry the realism verdict; gen/'s other metrics compare a sample with its own
    # reconstruction (self-consistency) and are shown in a table of their own, never ranked
    realism: bool = False
    # the evaluation sets whose records carry it
    sets: tuple[str, ...] = SETS
    # the provider that computes it, for a metric with a network or a set of its own
    # (`providers.PROVIDERS`: "lpips", "fid", "classifier"), also its eval switch: a switch
    # that is off, or a provider that cannot load, makes it unavailable
    switch: str | None = None
    # the families that report it: "all"; "gaussian" (those whose latent is a Gaussian
    # posterior, `Family.latent`); or the names of the families whose own quantity it is
    families: str | tuple[str, ...] = "all"
    # the function of a per-image metric computed from an image and its reconstruction alone:
    # (x, x_hat) -> (N,) tensor. Evaluation computes every entry that has one, in both sets.
    per_image: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def applies_to(self, family: str, latent: str) -> bool:
        if self.families == "all":
            return True
        if self.families == "gaussian":
            return latent == "gaussian"
        return family in self.families


def per_image_metrics() -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """key -> function of every registered per-image metric."""
    return {key: info.per_image for key, info in METRICS.items() if info.per_image is not None}


def applicable_metrics(family: str, latent: str) -> tuple[str, ...]:
    """The metric names a family reports (docs/metrics.md's applicability table)."""
    return tuple(key for key, info in METRICS.items() if info.applies_to(family, latent))


def metrics_of(family) -> tuple[str, ...]:
    """The metric names a `Family` reports (`applicable_metrics` of its name and latent)."""
    return applicable_metrics(family.name, family.latent)


# ---- per-image pixel metrics ----------------------------------------------------------------


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return (x - x_hat).pow(2).flatten(1).sum(dim=1)


def bce(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    # float64: in float32, 1 - 1e-7 rounds to 1 - 1.19e-7 and the clamp would move
    x, p = x.double(), x_hat.double().clamp(BCE_EPS, 1 - BCE_EPS)
    return -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(dim=1)


def psnr(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    mean_squared = (x - x_hat).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mean_squared)


def ssim(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    # piq's defaults are the spec: 11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, valid window
    return piq.ssim(x_hat.clamp(0, 1), x.clamp(0, 1), data_range=1.0, reduction="none")


def gmsd(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return piq.gmsd(x_hat.clamp(0, 1), x.clamp(0, 1), data_range=1.0, reduction="none")


# ---- the registry -------------------------------------------------------------------------

METRICS: dict[str, MetricInfo] = {
    m.key: m
    for m in [
        # set-level (benchmark/metrics/distribution.py): the realism verdict on gen/
        MetricInfo(
            "fid",
            False,
            "all",
            "Frechet Inception distance to the test set",
            plotted=True,
            realism=True,
            switch="fid",
        ),
        MetricInfo(
            "kid",
            False,
            "all",
            "kernel Inception distance to the test set (gen/ only)",
            realism=True,
            sets=("gen",),
            switch="fid",
        ),
        # set-level in the dataset's own classifier (benchmark/metrics/classifier.py): realism on
        # every machine, no downloaded weights
        MetricInfo(
            "cfd",
            False,
            "all",
            "Frechet distance to the test set in the dataset's own classifier's features",
            plotted=True,
            realism=True,
            switch="classifier",
        ),
        MetricInfo(
            "precision",
            True,
            "all",
            "share of samples inside the test set's k-NN manifold (k=3; gen/ only)",
            realism=True,
            sets=("gen",),
            switch="classifier",
        ),
        MetricInfo(
            "recall",
            True,
            "all",
            "share of test images inside the samples' k-NN manifold (k=3; gen/ only)",
            realism=True,
            sets=("gen",),
            switch="classifier",
        ),
        MetricInfo(
            "mse",
            False,
            "all",
            "pixel squared error, per-image sum",
            plotted=True,
            headline=True,
            per_image=mse,
        ),
        MetricInfo(
            "bce",
            False,
            "all",
            "pixel binary cross-entropy, per-image sum",
            plotted=True,
            per_image=bce,
        ),
        MetricInfo(
            "psnr",
            True,
            "all",
            "10 log10(1 / per-image MSE)",
            plotted=True,
            headline=True,
            per_image=psnr,
        ),
        MetricInfo(
            "lpips",
            False,
            "all",
            "LPIPS v0.1, VGG16 backbone (AlexNet with eval.lpips_net=alex)",
            plotted=True,
            headline=True,
            switch="lpips",
        ),
        MetricInfo(
            "ssim",
            True,
            "all",
            "SSIM, 11x11 Gaussian window, sigma 1.5",
            plotted=True,
            headline=True,
            per_image=ssim,
        ),
        MetricInfo(
            "gmsd",
            False,
            "all",
            "gradient magnitude similarity deviation",
            plotted=True,
            per_image=gmsd,
        ),
        # shown beside active_units, never ranked: one side of the reconstruction/regularisation
        # trade-off, zero at posterior collapse
        MetricInfo("kl", False, "never", "KL(q(z|x) || N(0, I))", families="gaussian"),
        MetricInfo(
            "elbo",
            False,
            "gaussian",
            "elbo = mse + kl (the seed's comparison quantity), reported as a loss",
            families="gaussian",
        ),
        MetricInfo("recon_loss", False, "never", "the family's own reconstruction loss"),
        MetricInfo("total_loss", False, "never", "the family's own training objective"),
        MetricInfo(
            "vq_loss",
            False,
            "never",
            "VQ commitment + codebook loss (pythae)",
            families=("vqvae",),
        ),
        MetricInfo("encoder_loss", False, "never", "VAEGAN: kl + recon_loss", families=("vaegan",)),
        MetricInfo(
            "decoder_loss",
            False,
            "never",
            "VAEGAN: (1-a) recon_loss - a disc. loss",
            judged=False,
            families=("vaegan",),
        ),
        MetricInfo(
            "discriminator_loss",
            False,
            "never",
            "VAEGAN: -log D(x) - log(1 - D(G(z)))",
            judged=False,
            families=("vaegan",),
        ),
        MetricInfo(
            "active_units",
            True,
            "never",
            "latent dims with Cov_x(E_q[z_i]) > 0.01",
            group="diagnostic",
            families="gaussian",
        ),
        MetricInfo(
            "codebook_perplexity",
            True,
            "never",
            "exp(entropy) of code frequencies",
            group="diagnostic",
            families=("vqvae",),
        ),
        MetricInfo(
            "codebook_usage",
            True,
            "never",
            "fraction of codes used at least once",
            group="diagnostic",
            families=("vqvae",),
        ),
        MetricInfo(
            "disc_accuracy_real",
            True,
            "never",
            "fraction of D(x) > 0.5 on real",
            group="diagnostic",
            judged=False,
            families=("vaegan",),
        ),
        MetricInfo(
            "disc_accuracy_fake",
            True,
            "never",
            "fraction of D(x) < 0.5 on generated",
            group="diagnostic",
            judged=False,
            families=("vaegan",),
        ),
    ]
}


def keys_switched_by(switch: str, sets: tuple[str, ...] = SETS) -> tuple[str, ...]:
    """The record keys (`recon/fid`, `gen/kid`, ...) of the metrics an eval switch turns on."""
    return tuple(
        f"{prefix}/{key}"
        for key, info in METRICS.items()
        if info.switch == switch
        for prefix in info.sets
        if prefix in sets
    )


def switch_of(record_key: str) -> str | None:
    """The eval switch behind a record key (`gen/precision` -> `classifier`), or None."""
    return METRICS[record_key.rsplit("/", 1)[-1]].switch


ACTIVE_UNIT_THRESHOLD = 0.01


# ---- set-level diagnostics ----------------------------------------------------------------


def active_units(mu: torch.Tensor) -> float:
    """Burda et al. 2016: dims whose posterior mean varies across the data (Cov_x > 0.01)."""
    variance = mu.double().var(dim=0, unbiased=False)
    return float((variance > ACTIVE_UNIT_THRESHOLD).sum())


def codebook_stats(codes: torch.Tensor, num_embeddings: int) -> dict[str, float]:
    counts = torch.bincount(codes.flatten(), minlength=num_embeddings).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {
        "codebook_perplexity": float(entropy.exp()),
        "codebook_usage": float((counts > 0).double().mean()),
    }


# ---- LPIPS ----------------------------------------------------------------------------------


class LPIPS:
    """LPIPS through the `lpips` package: its v0.1 linear layers (shipped in the package), on a
    backbone (`net`: "vgg" or "alex") whose pretrained tensors come from the weights cache
    (`benchmark.data.weights`, pinned by SHA-256).

    lpips would fetch the backbone itself through torchvision, which unpickles whatever file sits
    at the cache path; here lpips builds it without weights and it is filled from the cache.
    `LPIPS.load()` returns (None, reason) where those weights are not provisioned.
    `backbone=None` leaves the backbone random: for tests and timing only.
    """

    def __init__(
        self, device: torch.device | str = "cpu", backbone: dict | None = None, net: str = "vgg"
    ) -> None:
        import lpips

        self.net = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        self.backbone = net
        self.weights = "random (tests only)"
        self.seen_size: int | None = None  # the side of the images it last scored
        if backbone is not None:
            load_backbone_features(self.net.net, backbone)
            self.weights = weights.LPIPS_BACKBONES[net].label
        self.net.eval().to(device)

    def settings(self) -> dict:
        """What the record keeps of how its LPIPS numbers were made (after it has scored)."""
        settings = {"net": self.backbone, "version": "0.1", "weights": self.weights}
        if self.seen_size is not None and (side := self.upsample_to(self.seen_size)) is not None:
            settings["input"] = f"upsampled bilinearly from {self.seen_size} to {side} px"
        return settings

    @classmethod
    def load(cls, device: torch.device | str = "cpu", net: str = "vgg"):
        """(LPIPS, None), or (None, why not)."""
        pinned = weights.LPIPS_BACKBONES[net]
        try:
            return cls(device, weights.load_tensors(pinned), net), None
        except weights.WeightsUnavailable as error:
            return None, str(error)
        except Exception as error:  # noqa: BLE001 - pinned tensors lpips cannot take
            return None, f"could not build LPIPS on {pinned.title} ({error})"

    # AlexNet's stride-4 first layer and two pools leave nothing of an image under 64 px (a
    # 28 px digit is 0x0 at its second pool): such images are upsampled first, bilinearly
    ALEX_MIN_SIZE = 64

    def __call__(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        self.seen_size = x.shape[-1]

        def prepare(images: torch.Tensor) -> torch.Tensor:
            images = images.clamp(0, 1) * 2 - 1  # lpips expects [-1, 1]
            if self.upsample_to(images.shape[-1]) is not None:
                size = self.upsample_to(images.shape[-1])
                images = torch.nn.functional.interpolate(images, size=size, mode="bilinear")
            return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images

        return self.net(prepare(x), prepare(x_hat)).flatten()

    def upsample_to(self, size: int) -> int | None:
        """The side images of `size` px are upsampled to first; None: used as they are."""
        if self.backbone == "alex" and size < self.ALEX_MIN_SIZE:
            return self.ALEX_MIN_SIZE
        return None


def load_backbone_features(backbone: torch.nn.Module, state: dict) -> None:
    """Copy torchvision `features.i.*` tensors (VGG16 or AlexNet) into lpips' slices, which hold
    the same layers under their original index (`slice2.5.weight` is `features.5.weight`)."""
    own = backbone.state_dict()
    mapped = {name: state["features." + name.split(".", 1)[1]] for name in own}
    backbone.load_state_dict(mapped)
