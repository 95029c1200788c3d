"""The project's MLflow store whatever the working directory, classic-ML experiments whose
artifacts sit beside the database, training runs with a model output, links to the runs view."""

import os
from pathlib import Path

from instructedit import tracking


def test_default_store_does_not_follow_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("INSTRUCTEDIT_HOME", raising=False)
    here = tracking.default_tracking_uri()
    monkeypatch.chdir(tmp_path)
    assert tracking.default_tracking_uri() == here
    assert here == f"sqlite:///{Path(tracking.__file__).resolve().parents[2] / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("INSTRUCTEDIT_HOME", str(tmp_path / "home"))
    assert tracking.default_tracking_uri() == f"sqlite:///{tmp_path / 'home' / 'mlruns' / 'mlflow.db'}"
    assert tracking.store_label() == tracking.default_tracking_uri()
    assert "store sqlite:///" in tracking.logged_to("abc", experiment="x")


def test_experiments_are_classic_ml_with_artifacts_beside_the_db(tmp_path, tracking_uri, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path / "mlruns")  # a working directory that must not receive artifacts
    with tracking.run("store-test", "train-run", tags={"kind": "train"}) as rid:
        tracking.log_text("x", "note.txt")
        model_id = tracking.log_model_output(rid, "store-test-editor", step=20, params={"mode": "instructedit"})
    client = MlflowClient()
    exp = client.get_experiment_by_name("store-test")
    assert exp.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    db_dir = Path(tracking_uri[len("sqlite:///"):]).parent
    assert exp.artifact_location.startswith((db_dir / "artifacts").as_uri())
    assert (db_dir / "artifacts").is_dir() and not (Path(os.getcwd()) / "mlruns").exists()
    run = client.get_run(rid)
    assert [m.model_id for m in run.outputs.model_outputs] == [model_id]  # a training run, not an evaluation
    assert tracking.run_url(rid).endswith(f"/runs/{rid}?workflowType=machine_learning")
    assert tracking.experiment_url("store-test") == (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                                                     "?workflowType=machine_learning")

    # An experiment made elsewhere gets the tag; a kind chosen in the UI is kept.
    other = client.create_experiment("made-elsewhere")
    tracking.set_experiment("made-elsewhere")
    assert client.get_experiment(other).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    client.set_experiment_tag(other, tracking.EXPERIMENT_KIND_TAG, "genai_development")
    tracking.set_experiment("made-elsewhere")
    assert client.get_experiment(other).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"


def test_a_moved_store_still_serves_its_artifacts(tmp_path, monkeypatch):
    """A store committed to git and cloned into another folder: its runs' recorded artifact paths
    point at the old folder, and listing and downloading read the copy beside the database."""
    import shutil

    old = tmp_path / "old" / "store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{old / 'mlflow.db'}")
    with tracking.run("moved", "eval-run") as rid:
        tracking.log_text("cases", "eval/test/cases.txt")
    assert tracking.moved_artifacts(rid) is None  # where it was recorded: MLflow's own path
    new = tmp_path / "clone" / "store"
    shutil.copytree(old, new)
    shutil.rmtree(tmp_path / "old")
    uri = f"sqlite:///{new / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the store given explicitly, as --tracking-uri does
    moved = tracking.moved_artifacts(rid, uri)
    assert moved is not None and moved.is_relative_to(new / "artifacts") and moved.name == "artifacts"
    assert tracking.list_artifacts(rid, "eval/test", tracking_uri=uri) == ["eval/test/cases.txt"]
    local = tracking.download_artifacts(rid, "eval/test/cases.txt", dst=str(tmp_path / "dl"), tracking_uri=uri)
    assert Path(local).read_text() == "cases"
