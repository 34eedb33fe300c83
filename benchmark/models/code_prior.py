"""A PixelCNN over VQ-VAE code maps: the learned prior of van den Oord et al. 2017 (section 4).

p(c) = prod over positions in raster order of p(c_ij | codes above and to the left). Codes
enter through an embedding (a code index has no order), then masked convolutions: the first
("A") does not see its own position, the later ones ("B") do, so position ij's logits depend
only on earlier positions. Small on purpose: MNIST code maps are 4x4 to 7x7 grids.

pythae's own PixelCNNSampler was not used: it feeds the code index to the network as a
number, trains through pythae's trainer (output folders, 100 epochs by default) and samples
with its BatchNorm layers in training mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedConv2d(nn.Conv2d):
    def __init__(self, mask_type: str, channels: int, kernel_size: int) -> None:
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2)
        mask = torch.ones_like(self.weight)
        centre = kernel_size // 2
        mask[:, :, centre, centre + (mask_type == "B") :] = 0  # right of (or at) the centre
        mask[:, :, centre + 1 :] = 0  # rows below
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class CodePixelCNN(nn.Module):
    def __init__(self, num_codes: int, channels: int, layers: int, kernel_size: int) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.embed = nn.Embedding(num_codes, channels)
        self.first = MaskedConv2d("A", channels, kernel_size)
        self.blocks = nn.ModuleList(
            MaskedConv2d("B", channels, kernel_size) for _ in range(layers - 1)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, num_codes, 1),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, h, w) long -> logits (B, num_codes, h, w)."""
        x = self.first(self.embed(codes).permute(0, 3, 1, 2))
        for block in self.blocks:
            x = x + block(F.relu(x))  # residual: deep enough to see the whole grid, still trains
        return self.head(x)

    def nll_bits(self, codes: torch.Tensor, batch_size: int = 1000) -> float:
        """Mean negative log-likelihood per code position, in bits (uniform: log2 K)."""
        total = 0.0
        for start in range(0, len(codes), batch_size):
            batch = codes[start : start + batch_size]
            total += F.cross_entropy(self(batch), batch, reduction="sum").item()
        return total / codes.numel() / torch.log(torch.tensor(2.0)).item()

    @torch.no_grad()
    def sample(self, n: int, height: int, width: int) -> torch.Tensor:
        """n code maps, position by position in raster order (global torch RNG)."""
        device = self.embed.weight.device
        codes = torch.zeros((n, height, width), dtype=torch.long, device=device)
        for i in range(height):
            for j in range(width):
                probs = F.softmax(self(codes)[:, :, i, j], dim=1)
                codes[:, i, j] = torch.multinomial(probs, 1).squeeze(1)
        return codes


def fit_code_prior(
    codes: torch.Tensor,
    num_codes: int,
    *,
    channels: int,
    layers: int,
    kernel_size: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
) -> tuple[CodePixelCNN, list[float]]:
    """Maximum likelihood on the training set's code maps; returns the prior in eval mode and
    its training NLL (bits per code) after each epoch."""
    prior = CodePixelCNN(num_codes, channels, layers, kernel_size).to(codes.device)
    optimizer = torch.optim.Adam(prior.parameters(), lr=learning_rate)
    per_epoch = []
    prior.train()
    for _ in range(epochs):
        order = torch.randperm(len(codes), device=codes.device)
        total = 0.0
        for start in range(0, len(codes), batch_size):
            batch = codes[order[start : start + batch_size]]
            loss = F.cross_entropy(prior(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        per_epoch.append(total / len(codes) / torch.log(torch.tensor(2.0)).item())
    return prior.eval(), per_epoch
