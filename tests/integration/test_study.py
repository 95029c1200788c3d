"""Studies on Ray Tune end to end (local Ray, tiny-llama, a few real records per task).

One 3-trial `smoke` study (the task-scaling shape: [recent], [recent, counterfact], [recent,
counterfact, convsent]) serves most checks: it is interrupted (like Ctrl+C) after its first trial
finished, then continued through the CLI with --resume, which must run the other two and not the
first. A second, 2-trial study has one trial that raises at its first training step.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from instructedit import tracking
from instructedit.config import to_dict
from instructedit.studies.runner import best_from_mlflow, load_outcome_info, run_study
from instructedit.studies.spec import load_study
from instructedit.studies.trial import TRAIN_DIR, StudyHooks

SMOKE_TASKS = {"recent": ["recent"], "recent,counterfact": ["recent", "counterfact"],
               "recent,counterfact,convsent": ["recent", "counterfact", "convsent"]}


@pytest.fixture(scope="module")
def smoke(ray_local, tmp_path_factory, shared_data):
    from instructedit.cli import main

    tmp = tmp_path_factory.mktemp("study")
    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    storage = tmp / "studies"
    first = run_study(load_study("smoke"), storage=storage, tracking_uri=uri, stop_after=1, verbose=False)
    first_runs = {r.trial_id: r.run_id for r in first.trials if r.status == "done"}
    first_train_dirs = sorted(p.name for p in (first.study_dir / TRAIN_DIR).iterdir())
    rc = main(["study", "smoke", "--resume", "--storage", str(storage), "--quiet"])
    info = load_outcome_info("smoke", storage)
    second = run_study(load_study("smoke"), storage=storage, tracking_uri=uri, resume=True, verbose=False)
    return {"first": first, "first_runs": first_runs, "first_train_dirs": first_train_dirs, "rc": rc,
            "info": info, "out": second, "uri": uri, "tmp": tmp}


@pytest.mark.timeout(600)
def test_interrupted_study_resumes_without_rerunning_finished_trials(smoke):
    first, out = smoke["first"], smoke["out"]
    assert not first.finished and [r.status for r in first.trials][:1] == ["done"]
    assert len(smoke["first_runs"]) == 1 and len(smoke["first_train_dirs"]) == 1
    assert smoke["rc"] == 0 and out.finished
    assert [r.status for r in out.trials] == ["done"] * 3
    assert sorted(r.params["data.tasks"] for r in out.trials) == sorted(SMOKE_TASKS)
    (tid, run_id), = smoke["first_runs"].items()
    assert {r.trial_id: r.run_id for r in out.trials}[tid] == run_id  # the same child run, kept
    train_dirs = sorted(p.name for p in (out.study_dir / TRAIN_DIR).iterdir())
    assert len(train_dirs) == 3 and smoke["first_train_dirs"][0] in train_dirs  # trained once each
    children = tracking.search_runs("study-smoke", "tags.kind = 'trial'", tracking_uri=smoke["uri"])
    assert len(children) == 3 and children["tags.trial_id"].nunique() == 3


def test_parent_and_child_runs_carry_params_metrics_and_artifacts(smoke):
    out, uri = smoke["out"], smoke["uri"]
    assert smoke["info"]["parent_run_id"] == out.parent_run_id
    parent = tracking.get_run(out.parent_run_id, uri)
    assert parent.info.status == "FINISHED"
    t, p, m = parent.data.tags, parent.data.params, parent.data.metrics
    assert t["kind"] == "study" and t["study"] == "smoke" and t["study_status"] == "finished"
    assert t["mode"] == "instructedit" and t["method"] == "InstructEdit" and t["git_commit"]
    assert p["study.metric"] == "val/score" and p["study.searcher"] == "grid"  # selection on validation
    assert p["study.space.data.tasks"].startswith("grid") and p["model"] == "tiny-llama"
    assert m["study/trials_done"] == 3 and m["study/trials_failed"] == 0
    assert m["best/val/score"] == pytest.approx(out.best.metrics["val/score"])
    assert m["best/test/zsre/reliability"] == pytest.approx(out.best.metrics["test/zsre/reliability"])  # a result
    arts = set(tracking.list_artifacts(out.parent_run_id, "", uri)) | set(
        tracking.list_artifacts(out.parent_run_id, "best", uri))
    assert {"summary.csv", "study.yaml", "best/config.yaml"} <= arts
    table = pd.read_csv(tracking.download_artifacts(out.parent_run_id, "summary.csv", tracking_uri=uri))
    assert len(table) == 3 and set(table["status"]) == {"done"}
    assert table["val/score"].is_monotonic_decreasing  # best (by the val objective) first
    assert list(table.columns)[4:6] == ["val/score", "test/zsre/reliability"]  # objective, then results
    assert {"param:data.tasks", "val/score", "mlflow_run_id", "checkpoint"} <= set(table.columns)

    children = tracking.search_runs("study-smoke", f"tags.mlflow.parentRunId = '{out.parent_run_id}'",
                                    tracking_uri=uri)
    assert len(children) == 3 and set(children["status"]) == {"FINISHED"}
    for _, c in children.iterrows():
        tasks = SMOKE_TASKS[c["params.search.data.tasks"]]
        assert c["tags.kind"] == "trial" and c["tags.study"] == "smoke"
        assert c["tags.mode"] == "instructedit" and c["tags.method"] == "InstructEdit"
        assert c["tags.tasks"] == ",".join(tasks) and c["tags.instruction_setting"] == "seen"
        assert c["params.data.tasks"] == str(tasks) and c["params.train.max_steps"] == "4"
        for task in ["zsre", *tasks]:
            assert c[f"metrics.test/{task}/edit_success"] == c[f"metrics.test/{task}/edit_success"], task
        assert c["metrics.val/score"] >= 0 and c["metrics.train/steps"] == 4
        arts = set(tracking.list_artifacts(c["run_id"], "checkpoint", uri)) | set(
            tracking.list_artifacts(c["run_id"], "eval/test", uri))
        assert {"checkpoint/editor.pt", "eval/test/cases.parquet", "eval/test/summary.csv"} <= arts


def test_best_trial_config_and_checkpoint_can_be_fetched(smoke, tmp_path):
    from instructedit.editor.mend import MendEditor

    out = smoke["out"]
    scores = {r.trial_id: r.metrics["val/score"] for r in out.trials}  # the best trial is chosen on val
    assert out.best.trial_id == max(scores, key=scores.get)
    assert list(out.best_config.data.tasks) == SMOKE_TASKS[out.best.params["data.tasks"]]
    assert out.best_checkpoint.exists()
    cfg, ckpt = best_from_mlflow(out.parent_run_id, smoke["uri"], str(tmp_path))
    assert cfg == yaml.safe_load(yaml.safe_dump(to_dict(out.best_config)))
    editor = MendEditor.from_checkpoint(str(ckpt))
    assert editor.model_cfg.name == "tiny-llama"
    tags = tracking.get_run(out.parent_run_id, smoke["uri"]).data.tags
    assert tags["best_trial"] == out.best.trial_id and tags["best_run_id"] == out.best.run_id
    assert json.loads(tags["best_params"]) == out.best.params


@pytest.mark.timeout(400)
def test_failed_trial_is_reported_without_killing_the_study(ray_local, tmp_path, shared_data):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    spec = load_study("smoke", {"study.space": {"editor.edit_lr": {"grid": [0.01, 0.02]}},
                                "study.budget.max_steps": 2, "study.test.tasks": ["zsre"],
                                "study.test.training_tasks": False})
    out = run_study(spec, extra_overrides={"data.tasks": ["recent"]}, storage=tmp_path / "studies",
                    tracking_uri=uri, hooks=StudyHooks(fail_if={"editor.edit_lr": 0.02}, fail_step=0),
                    verbose=False)
    assert out.finished
    by_lr = {r.params["editor.edit_lr"]: r for r in out.trials}
    assert by_lr["0.01"].status == "done" and by_lr["0.02"].status == "failed"
    assert "injected training failure" in by_lr["0.02"].error
    assert out.best.trial_id == by_lr["0.01"].trial_id
    parent = tracking.get_run(out.parent_run_id, uri)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["study/trials_failed"] == 1 and parent.data.metrics["study/trials_done"] == 1
    failed = tracking.search_runs("study-smoke", f"tags.trial_id = '{by_lr['0.02'].trial_id}'", tracking_uri=uri)
    assert list(failed["status"]) == ["FAILED"]
    table = pd.read_csv(Path(out.summary_path))
    assert list(table["status"]) == ["done", "failed"]
