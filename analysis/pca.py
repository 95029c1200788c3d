"""Principal component analysis in numpy (no torch, no sklearn).

Editing gradients are few (tens per task) and wide (a flattened weight update), so when n < dim the
components come from the n x n Gram matrix instead of a dim x dim covariance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PCAResult:
    projections: np.ndarray  # [n, k] the data in component coordinates
    explained_variance: np.ndarray  # [k] variance along each component
    explained_variance_ratio: np.ndarray  # [k] share of the total variance
    mean: np.ndarray  # [dim]
    components: np.ndarray | None  # [k, dim] unit directions (None if not asked for)


def pca(x: np.ndarray, n_components: int | None = None, return_components: bool = True) -> PCAResult:
    """Project rows of `x` [n, dim] on their top principal components.

    Signs are fixed so that the largest-magnitude projection on each component is positive, which makes
    results reproducible across runs and platforms.
    """
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"pca needs a 2-D array with at least 2 rows, got shape {x.shape}")
    work = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    n, dim = work.shape
    mean = work.mean(axis=0)
    xc = work - mean
    k_max = min(n - 1, dim) if n > 1 else 1
    k = k_max if n_components is None else max(1, min(int(n_components), k_max))
    total = float((xc.astype(np.float64) ** 2).sum()) / (n - 1)

    if n <= dim:
        gram = (xc @ xc.T).astype(np.float64)
        evals, evecs = np.linalg.eigh(gram)
        order = np.argsort(evals)[::-1][:k]
        evals = np.clip(evals[order], 0.0, None)
        u = evecs[:, order]
        s = np.sqrt(evals)
        proj = u * s
        comps = None
        if return_components:
            safe = np.where(s > 1e-12, s, 1.0)
            comps = ((xc.T.astype(np.float64) @ u) / safe).T
    else:
        cov = (xc.T @ xc).astype(np.float64)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1][:k]
        evals = np.clip(evals[order], 0.0, None)
        comps = evecs[:, order].T
        proj = xc.astype(np.float64) @ comps.T

    signs = np.sign(proj[np.abs(proj).argmax(axis=0), np.arange(proj.shape[1])])
    signs[signs == 0] = 1.0
    proj = proj * signs
    if comps is not None:
        comps = comps * signs[:, None]
    var = evals / (n - 1)
    ratio = var / total if total > 0 else np.zeros_like(var)
    return PCAResult(proj, var, ratio, mean, comps if return_components else None)


def project(result: PCAResult, x: np.ndarray) -> np.ndarray:
    """New rows in the coordinates of a fitted PCA (needs its components)."""
    if result.components is None:
        raise ValueError("fit with return_components=True to project new data")
    return (np.asarray(x, dtype=np.float64) - result.mean) @ result.components.T


def centroid_accuracy(points: np.ndarray, labels) -> float:
    """Share of points whose nearest class centroid is their own class: 1.0 = classes separate."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        return float("nan")
    cents = np.stack([points[labels == c].mean(axis=0) for c in classes])
    d = ((points[:, None, :] - cents[None, :, :]) ** 2).sum(-1)
    return float((classes[d.argmin(axis=1)] == labels).mean())


def separation_ratio(points: np.ndarray, labels) -> float:
    """Between-class over within-class variance (a Fisher ratio); larger = better separated."""
    labels = np.asarray(labels)
    mu = points.mean(axis=0)
    between = within = 0.0
    for c in np.unique(labels):
        p = points[labels == c]
        between += len(p) * float(((p.mean(axis=0) - mu) ** 2).sum())
        within += float(((p - p.mean(axis=0)) ** 2).sum())
    return between / within if within > 0 else float("inf")
