"""The MEND gradient transform g: (u, d) -> (u~, d~).

One net per weight shape, shared by every edited weight of that shape; each weight ("mode") has its
own scale/shift after every hidden layer and its own running input statistics. Hidden layers are
low-rank residual blocks whose up-projection starts at zero, so a fresh net is the identity on its
(normalised) input; with fresh statistics (mean 0, var 1) a fresh transform returns (u, d) unchanged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class RunningNorm(nn.Module):
    """Exact running mean/variance per mode over every real token seen in training."""

    def __init__(self, n_modes: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros(n_modes, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_modes, dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(n_modes, dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, mode: int, x: torch.Tensor) -> None:
        # Chan et al. parallel update: merge the batch's moments into the running ones.
        x = x.detach().to(torch.float64)
        n_b = torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)
        s1, s2 = x.sum(0), (x * x).sum(0)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Data-parallel workers merge their batch moments so every replica keeps the same
            # statistics as one worker seeing the whole global batch.
            packed = torch.cat([n_b[None], s1, s2])
            dist.all_reduce(packed)
            n_b, s1, s2 = packed[0], packed[1 : 1 + x.shape[1]], packed[1 + x.shape[1]:]
        if n_b == 0:
            return
        mean_b = s1 / n_b
        m2_b = (s2 - n_b * mean_b**2).clamp(min=0)
        n_a = self.count[mode]
        n = n_a + n_b
        delta = mean_b - self.mean[mode]
        self.mean[mode] += delta * (n_b / n)
        self.m2[mode] += m2_b + delta**2 * (n_a * n_b / n)
        self.count[mode] = n

    def forward(self, mode: int, x: torch.Tensor) -> torch.Tensor:
        if self.count[mode] < 2:
            return x
        var = self.m2[mode] / (self.count[mode] - 1)
        std = (var + self.eps).sqrt()
        return (x - self.mean[mode].to(x.dtype)) / std.to(x.dtype)


class LowRankResidual(nn.Module):
    def __init__(self, dim: int, rank: int, n_modes: int):
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(rank, dim)
        nn.init.zeros_(self.up.weight)  # identity at initialisation
        nn.init.zeros_(self.up.bias)
        self.scale = nn.Parameter(torch.ones(n_modes, dim))
        self.shift = nn.Parameter(torch.zeros(n_modes, dim))

    def forward(self, x: torch.Tensor, mode: int) -> torch.Tensor:
        h = x + self.up(torch.relu(self.down(x)))
        return h * self.scale[mode] + self.shift[mode]


class GradientTransform(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, n_modes: int, rank: int, n_hidden: int = 1,
                 norm: bool = True):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        dim = in_dim + out_dim
        self.rank = min(rank, dim)
        self.norm = RunningNorm(n_modes, dim) if norm else None
        self.layers = nn.ModuleList(LowRankResidual(dim, self.rank, n_modes) for _ in range(n_hidden))

    def forward(self, u: torch.Tensor, d: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        """u: (n, in), d: (n, out) for the real tokens of one weight -> (u~, d~) of the same shapes."""
        x = torch.cat([u, d], dim=-1)
        if self.norm is not None:
            if self.training:
                self.norm.update(mode, x)
            x = self.norm(mode, x)
        for layer in self.layers:
            x = layer(x, mode)
        return x[:, : self.in_dim], x[:, self.in_dim:]
