import subprocess
import sys
from pathlib import Path

import numpy as np
import synthetic_runs

from analysis.pca import centroid_accuracy, pca, project, separation_ratio


def test_pca_separates_known_clusters():
    x, labels = synthetic_runs.gradient_clusters(n_per_task=25, dim=200, seed=1, spread=8.0)
    res = pca(x, n_components=5)
    assert res.projections.shape == (100, 5)
    # four clusters live in a 3-D subspace of centre differences: the first 3 PCs carry most variance
    assert res.explained_variance_ratio[:3].sum() > 0.6
    assert res.explained_variance_ratio[3] < 0.1
    assert centroid_accuracy(res.projections[:, :3], labels) == 1.0
    assert separation_ratio(res.projections[:, :2], labels) > 5
    # shuffled labels: no structure
    rng = np.random.default_rng(0)
    assert separation_ratio(res.projections[:, :2], rng.permutation(labels)) < 0.5


def test_pca_matches_svd_and_both_branches_agree():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    wide = pca(np.concatenate([x, np.zeros((40, 60))], axis=1))  # n < dim: Gram route
    tall = pca(x)  # n > dim: covariance route
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    np.testing.assert_allclose(tall.explained_variance, s**2 / 39, rtol=1e-6)
    np.testing.assert_allclose(wide.explained_variance[:6], tall.explained_variance, rtol=1e-5)
    np.testing.assert_allclose(np.abs(wide.projections[:, :5]), np.abs(tall.projections[:, :5]), atol=1e-6)
    assert abs(tall.explained_variance_ratio.sum() - 1) < 1e-9
    assert np.all(np.diff(tall.explained_variance) <= 1e-9)
    np.testing.assert_allclose(project(tall, x), tall.projections, atol=1e-8)
    np.testing.assert_allclose(tall.components @ tall.components.T, np.eye(len(tall.components)), atol=1e-8)


def test_analysis_never_imports_torch_or_the_editor():
    """Only the editor's torch-free method registry (names, labels, table order) is read."""
    repo = Path(__file__).resolve().parents[3]
    code = ("import sys; import analysis.runs, analysis.tables, analysis.figures, analysis.pca, "
            "analysis.gradients, analysis.report; "
            "ok = ('instructedit.editor', 'instructedit.editor.methods'); "
            "bad = [m for m in sys.modules if m == 'torch' or (m.startswith('instructedit.editor') and m not in ok)]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, timeout=60)
