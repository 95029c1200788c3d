"""Analysis test set-up: the real `analysis` package first on sys.path, and one synthetic MLflow store
shared by the session (building it takes a few seconds)."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
# This folder is named `analysis` too: once tests/unit is on sys.path (pytest's prepend mode) it would be a
# namespace-package candidate. The repo root first makes `import analysis` find the real package.
for p in (str(HERE), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)
if "analysis" in sys.modules and getattr(sys.modules["analysis"], "__file__", None) is None:
    del sys.modules["analysis"]

import synthetic_runs


@pytest.fixture(scope="session")
def store(tmp_path_factory, new_store):
    """(tracking uri, experiment name, run ids by group) of a synthetic experiment."""
    root = tmp_path_factory.mktemp("mlruns")
    uri = new_store(root / "mlflow.db")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    ids = synthetic_runs.build("synthetic", uri=uri)
    yield uri, "synthetic", ids
    mp.undo()


@pytest.fixture(scope="session")
def tidy(store):
    from analysis.runs import load_runs

    uri, exp, _ = store
    return load_runs(exp, tracking_uri=uri)
