"""Shared test set-up: no network, no telemetry, temp dirs for Ray and MLflow stores. Models convert
once into the user's model cache ($INSTRUCTEDIT_CACHE, else ~/.cache/instructedit)."""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Short socket path: Ray's unix sockets must stay under ~100 chars.
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rt", dir="/tmp"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("INSTRUCTEDIT_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"shared corpora not found at {SHARED_DATA} (set INSTRUCTEDIT_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def new_store(tmp_path_factory):
    """`new_store(db_path) -> uri`: an empty MLflow sqlite store at db_path, a copy of one created
    once per session. Creating a store runs MLflow's schema migrations (3-5 s on 2 shared cores),
    which some 30 tests would otherwise each pay; the store MLflow makes itself is still tested
    (test_tracking_store, the demo and UI subprocesses)."""
    import shutil

    from mlflow.tracking import MlflowClient

    template = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()

    def make(db: Path) -> str:
        db = Path(db)
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, db)
        return f"sqlite:///{db}"

    return make


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch, new_store) -> str:
    uri = new_store(tmp_path / "mlruns" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def ray_local():
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_editor_checkpoint(tmp_path_factory) -> Path:
    """A tiny-llama editor trained for a few seconds on synthetic facts (shared by several tests)."""
    import random

    from instructedit.config import load_run_config
    from instructedit.data.record import EditRecord, Probe
    from instructedit.train.loop import train_editor

    rng = random.Random(0)
    words = ["red", "blue", "gold", "jade", "iron", "salt", "wolf", "bear", "oak", "elm"]

    def recs(n, tag):
        out = []
        for i in range(n):
            subj = "".join(rng.choice("bcdfghklmnprstvz") for _ in range(3))
            out.append(EditRecord(task="counterfact", case_id=f"fx-{tag}-{i}", prompt=f"The color of {subj} is",
                                  target_new=rng.choice(words), subject=subj,
                                  locality=[Probe("neighborhood", f"The home of {subj[::-1]} is", [rng.choice(words)])]))
        return out

    cfg = load_run_config(None, {
        "model": "tiny-llama", "mode": "multi-task", "data.instruction_setting": "none",
        "editor.rank": 64, "editor.lr": 1e-3, "editor.lr_lr": 1e-3, "editor.edit_lr": 1e-2,
        "editor.c_edit": 1.0, "editor.c_loc": 100.0, "train.batch_size": 8, "train.max_steps": 60,
        "train.val_every": 30, "train.log_every": 30, "train.val_size": 16, "train.max_length": 48,
    })
    out = tmp_path_factory.mktemp("tiny-editor")
    result = train_editor(cfg, recs(200, "train"), recs(16, "val"), out, verbose=False)
    assert result.checkpoint is not None
    return result.checkpoint
