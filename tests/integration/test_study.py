"""Studies on Ray Tune end to end (local Ray, tiny-llama, a few real records per task).

One 3-trial `smoke` study (the task-scaling shape: [recent], [recent, counterfact], [recent,
counterfact, convsent]) serves every check (Ray start-up dominates a trial on 2 shared cores): its
first trial raises at its first training step (it must be reported FAILED, in Tune and in MLflow,
without killing the study), the study is interrupted (like Ctrl+C) after its second trial finished,
then continued through the CLI with --resume, which must run the third and neither of the others.
The failed trial's child run is the run `train_run` tracks, so this also checks that an exception in
training leaves that MLflow run FAILED.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from instructedit import tracking
from instructedit.config import to_dict
from instructedit.studies.runner import best_from_mlflow, load_outcome_info, run_study
from instructedit.studies.spec import encode, load_study
from instructedit.studies.trial import TRAIN_DIR, StudyHooks

SMOKE_TASKS = {"recent": ["recent"], "recent,counterfact": ["recent", "counterfact"],
               "recent,counterfact,convsent": ["recent", "counterfact", "convsent"]}
FAILING = ["recent"]  # the first trial: raises at step 0 on every attempt


@pytest.fixture(scope="module")
def smoke(ray_local, tmp_path_factory, shared_data, new_store):
    from instructedit.cli import main

    tmp = tmp_path_factory.mktemp("study")
    uri = new_store(tmp / "mlruns" / "mlflow.db")
    storage = tmp / "studies"
    first = run_study(load_study("smoke"), storage=storage, tracking_uri=uri, stop_after=1, verbose=False,
                      hooks=StudyHooks(fail_if={"data.tasks": encode(FAILING)}, fail_step=0))
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
    status = {r.params.get("data.tasks", "not started"): r.status for r in first.trials}
    assert not first.finished and status["recent"] == "failed" and status["recent,counterfact"] == "done"
    assert set(status) <= {"recent", "recent,counterfact", "not started"}  # the third: not started yet
    assert len(smoke["first_runs"]) == 1 and len(smoke["first_train_dirs"]) == 2
    assert smoke["rc"] == 0 and out.finished
    status = {r.params["data.tasks"]: r.status for r in out.trials}
    assert status == {"recent": "failed", "recent,counterfact": "done", "recent,counterfact,convsent": "done"}
    (tid, run_id), = smoke["first_runs"].items()
    assert {r.trial_id: r.run_id for r in out.trials}[tid] == run_id  # the same child run, kept
    train_dirs = sorted(p.name for p in (out.study_dir / TRAIN_DIR).iterdir())
    # each trained once: the finished one is kept, the failed one is not retried
    assert len(train_dirs) == 3 and set(smoke["first_train_dirs"]) <= set(train_dirs)
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
    assert m["study/trials_done"] == 2 and m["study/trials_failed"] == 1
    assert m["best/val/score"] == pytest.approx(out.best.metrics["val/score"])
    assert m["best/test/zsre/reliability"] == pytest.approx(out.best.metrics["test/zsre/reliability"])  # a result
    arts = set(tracking.list_artifacts(out.parent_run_id, "", uri)) | set(
        tracking.list_artifacts(out.parent_run_id, "best", uri))
    assert {"summary.csv", "study.yaml", "best/config.yaml"} <= arts
    table = pd.read_csv(tracking.download_artifacts(out.parent_run_id, "summary.csv", tracking_uri=uri))
    assert len(table) == 3 and list(table["status"]) == ["done", "done", "failed"]  # failed last
    assert table["val/score"].iloc[:2].is_monotonic_decreasing  # best (by the val objective) first
    assert list(table.columns)[4:6] == ["val/score", "test/zsre/reliability"]  # objective, then results
    assert {"param:data.tasks", "val/score", "mlflow_run_id", "checkpoint"} <= set(table.columns)

    children = tracking.search_runs("study-smoke", f"tags.mlflow.parentRunId = '{out.parent_run_id}'",
                                    tracking_uri=uri)
    assert len(children) == 3
    by_tasks = {c["tags.tasks"]: c for _, c in children.iterrows()}
    failed = by_tasks.pop(",".join(FAILING))
    assert failed["status"] == "FAILED" and failed["tags.kind"] == "trial"  # training raised: run FAILED
    assert {c["status"] for c in by_tasks.values()} == {"FINISHED"}
    for c in by_tasks.values():
        tasks = SMOKE_TASKS[c["params.search.data.tasks"]]
        assert c["tags.kind"] == "trial" and c["tags.study"] == "smoke"
        assert c["tags.command"] == t["command"]  # the study's command, not Ray's worker's argv
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
    scores = {r.trial_id: r.metrics["val/score"] for r in out.trials if r.status == "done"}  # chosen on val
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


def test_failed_trial_is_reported_without_killing_the_study(smoke):
    out = smoke["out"]
    failed, = [r for r in out.trials if r.status == "failed"]
    assert failed.params["data.tasks"] == ",".join(FAILING)
    assert "injected training failure" in failed.error
    assert out.best.trial_id != failed.trial_id and out.best.status == "done"
    table = pd.read_csv(Path(out.summary_path))
    row = table[table["trial_id"] == failed.trial_id].iloc[0]
    assert row["status"] == "failed" and "injected training failure" in str(row["error"])
