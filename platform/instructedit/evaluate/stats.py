"""Bootstrap intervals for per-case metrics (numpy only: analysis/ imports this too).

Every reported cell is a mean over cases with a 95% percentile-bootstrap interval. With several
training seeds evaluated on the same cases, a value is a (seeds x cases) matrix and each bootstrap
draw resamples seeds and cases (a two-stage bootstrap), so the interval covers both sources of
variation. A difference between two methods on the same cases resamples the cases jointly (paired);
between one set of editors under two conditions (seen vs unseen, instructed vs plain probes), the
seeds jointly too.
All draws are seeded: the same values always give the same interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    mean: float
    ci_low: float
    ci_high: float
    n: int  # cases (the seeds do not multiply it)

    def as_dict(self) -> dict:
        return asdict(self)


def _matrix(values) -> np.ndarray:
    """A 1-d sample (one seed) or a (seeds, cases) matrix -> 2-d float array without NaN cases."""
    a = np.asarray(values, dtype=float)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"expected cases or a (seeds, cases) matrix, got shape {a.shape}")
    keep = ~np.isnan(a).any(axis=0)  # a case missing under one seed is left out for all
    return a[:, keep]


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.percentile(draws, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def _draw_means(a: np.ndarray, rng: np.random.Generator, n_boot: int,
                case_idx: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap means of a (seeds, cases) matrix; `case_idx` (n_boot, cases) shares case draws."""
    s, n = a.shape
    cases = rng.integers(0, n, size=(n_boot, n)) if case_idx is None else case_idx
    if s == 1:
        return a[0][cases].mean(axis=1)
    seeds = rng.integers(0, s, size=(n_boot, s))
    # mean over the drawn seeds of the mean over the drawn cases
    per_seed = a[:, cases].mean(axis=2)  # (s, n_boot)
    return np.take_along_axis(per_seed.T, seeds, axis=1).mean(axis=1)


def bootstrap(values, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL) -> Estimate:
    """Mean and bootstrap interval of per-case values (1-d) or of a (seeds, cases) matrix."""
    a = _matrix(values)
    n = a.shape[1]
    if a.size == 0:  # no cases, or no seed with a value (a metric the task does not have)
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(a.mean())
    if n == 1 and a.shape[0] == 1:
        return Estimate(mean, mean, mean, 1)
    lo, hi = _percentiles(_draw_means(a, np.random.default_rng(seed), n_boot), level)
    return Estimate(mean, lo, hi, n)


def paired(a_values, b_values, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL,
           same_seeds: bool = False) -> Estimate:
    """mean(a) - mean(b) on the same cases, with a paired bootstrap interval: cases drawn jointly.
    Seeds, where given as matrices, are drawn separately for each side (two methods' seed 0 are
    different editors), or jointly with `same_seeds` when row i of both is the same trained editor
    under two conditions (seen vs unseen instructions, instructed vs plain probes)."""
    a, b = np.asarray(a_values, dtype=float), np.asarray(b_values, dtype=float)
    a, b = (a[None, :] if a.ndim == 1 else a), (b[None, :] if b.ndim == 1 else b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired values need the same cases, got {a.shape[1]} and {b.shape[1]}")
    if same_seeds:
        if a.shape != b.shape:
            raise ValueError(f"same_seeds needs the same seeds on both sides, got {a.shape[0]} and {b.shape[0]}")
        return bootstrap(a - b, seed, n_boot, level)  # a case missing on either side is NaN here: left out
    keep = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
    a, b = a[:, keep], b[:, keep]
    n = a.shape[1]
    if a.size == 0 or b.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(a.mean() - b.mean())
    rng = np.random.default_rng(seed)
    cases = rng.integers(0, n, size=(n_boot, n))
    diffs = _draw_means(a, rng, n_boot, cases) - _draw_means(b, rng, n_boot, cases)
    lo, hi = _percentiles(diffs, level)
    return Estimate(mean, lo, hi, n)


def stratified(groups: list, seed: int = 0, n_boot: int = N_BOOT, level: float = LEVEL) -> Estimate:
    """The macro average over groups (tasks) of their means; each draw resamples every group's
    cases within the group, so the interval is that of the average of task means."""
    mats = [m for m in (_matrix(g) for g in groups) if m.size]
    if not mats:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    mean = float(np.mean([m.mean() for m in mats]))
    draws = np.mean([_draw_means(m, rng, n_boot) for m in mats], axis=0)
    lo, hi = _percentiles(draws, level)
    return Estimate(mean, lo, hi, int(sum(m.shape[1] for m in mats)))
