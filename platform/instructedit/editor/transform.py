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
    """Exact running mean/variance per mode over every token the editor selects in training.

    forward standardises with eps on the std, (x - mean) / (std + eps), as MEND does (eps 1e-7):
    output gradients d are small, and adding eps to the variance instead (eps_on="var", the legacy
    behaviour kept for old checkpoints) shrinks every dimension whose std is not well above
    sqrt(eps) (3e-3 for 1e-5) by std / sqrt(eps) instead of standardising it.
    """

    def __init__(self, n_modes: int, dim: int, eps: float = 1e-7, eps_on: str = "std"):
        super().__init__()
        if eps_on not in ("std", "var"):
            raise ValueError(f"eps_on must be std or var, got {eps_on!r}")
        self.eps, self.eps_on = eps, eps_on
        self.register_buffer("count", torch.zeros(n_modes, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_modes, dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(n_modes, dim, dtype=torch.float64))

    @staticmethod
    @torch.no_grad()
    def local_moments(x: torch.Tensor) -> torch.Tensor:
        """[n, mean, M2] of this worker's batch, two-pass in float64 (exact also when |mean| >> std)."""
        x = x.detach().to(torch.float64)
        n = torch.tensor([float(x.shape[0])], dtype=torch.float64, device=x.device)
        mean = x.mean(0) if x.shape[0] else x.new_zeros(x.shape[1])
        return torch.cat([n, mean, ((x - mean) ** 2).sum(0)])

    @torch.no_grad()
    def merge(self, mode: int, packed: torch.Tensor) -> None:
        """Chan et al.'s parallel update: fold a batch's [n, mean, M2] into the running moments."""
        dim = self.mean.shape[1]
        n_b, mean_b, m2_b = packed[0], packed[1 : 1 + dim], packed[1 + dim:]
        if n_b == 0:
            return
        n_a = self.count[mode]
        n = n_a + n_b
        delta = mean_b - self.mean[mode]
        self.mean[mode] += delta * (n_b / n)
        self.m2[mode] += m2_b + delta**2 * (n_a * n_b / n)
        self.count[mode] = n

    @torch.no_grad()
    def update(self, mode: int, x: torch.Tensor) -> None:
        packed = self.local_moments(x)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Data-parallel workers fold every worker's batch moments in rank order, so all
            # replicas keep the same statistics as one worker seeing the whole global batch.
            gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, packed)
        else:
            gathered = [packed]
        for part in gathered:
            self.merge(mode, part)

    def var(self, mode: int) -> torch.Tensor:
        return self.m2[mode] / (self.count[mode] - 1)

    def std(self, mode: int) -> torch.Tensor:
        return self.var(mode).sqrt()

    def forward(self, mode: int, x: torch.Tensor) -> torch.Tensor:
        if self.count[mode] < 2:
            return x
        scale = self.std(mode) + self.eps if self.eps_on == "std" else (self.var(mode) + self.eps).sqrt()
        return (x - self.mean[mode].to(x.dtype)) / scale.to(x.dtype)


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
                 norm: bool = True, norm_eps: float = 1e-7, norm_eps_on: str = "std"):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        dim = in_dim + out_dim
        self.rank = min(rank, dim)
        self.norm = RunningNorm(n_modes, dim, norm_eps, norm_eps_on) if norm else None
        self.layers = nn.ModuleList(LowRankResidual(dim, self.rank, n_modes) for _ in range(n_hidden))

    def forward(self, u: torch.Tensor, d: torch.Tensor, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
        """u: (n, in), d: (n, out) for the selected tokens of one weight -> (u~, d~) of the same shapes."""
        x = torch.cat([u, d], dim=-1)
        if self.norm is not None:
            if self.training:
                self.norm.update(mode, x)
            x = self.norm(mode, x)
        for layer in self.layers:
            x = layer(x, mode)
        return x[:, : self.in_dim], x[:, self.in_dim:]
