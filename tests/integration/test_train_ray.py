"""Editor training on Ray Train (local Ray, CPU workers, tiny-llama on a few real records).

One 2-worker run serves several checks (Ray start-up dominates on 2 shared cores): rank 1 is killed
(os._exit) at step 4 on the first attempt only; the group restarts from the step-3 checkpoint and
finishes. (A run whose training raises must end its MLflow run FAILED: tests/integration/test_study.py
checks it on the failed trial's run, which is the run `train_run` tracks.)
"""

import json
from pathlib import Path

import pytest
import torch
from instructedit import tracking
from instructedit.config import load_run_config
from instructedit.data.pipeline import load_records
from instructedit.train.checkpoint import load_resume_state
from instructedit.train.loop import train_editor
from instructedit.train.run import train_run
from instructedit.train.trainer import WorkerHooks, canonical_order

TASKS = ["counterfact", "recent"]
BATCH = 4
STEPS = 6


def small_config(workers: int, **extra):
    return load_run_config(None, {
        "name": "ray-test", "experiment": "ray-test", "model": "tiny-llama", "mode": "instructedit",
        "data.tasks": TASKS, "data.hold_out": [], "data.max_records": 16,
        "editor.rank": 16, "editor.lr": 1e-3, "editor.lr_lr": 1e-3, "editor.edit_lr": 1e-2, "editor.c_loc": 10.0,
        "train.batch_size": BATCH, "train.max_steps": STEPS, "train.val_every": 3, "train.log_every": 1,
        "train.val_size": 4, "train.max_length": 64, "train.num_workers": workers, "train.max_failures": 1,
        "train.keep_checkpoints": 2, "train.early_stop_patience": 10, **extra,
    })


@pytest.fixture(scope="module")
def two_workers(ray_local, tmp_path_factory, shared_data, new_store):
    tmp = tmp_path_factory.mktemp("ray2")
    uri = new_store(tmp / "mlruns" / "mlflow.db")
    cfg = small_config(2)
    hooks = WorkerHooks(fault_step=4, fault_rank=1, fault_marker=str(tmp / "fault.marker"),
                        batch_log_dir=str(tmp / "batches"))
    out = train_run(cfg, tracking_uri=uri, storage_path=str(tmp / "storage"), worker_hooks=hooks, verbose=False)
    batches = {}
    for f in sorted((tmp / "batches").glob("rank-*.jsonl")):
        batches[f.stem] = [json.loads(line) for line in f.read_text().splitlines()]
    return {"cfg": cfg, "out": out, "uri": uri, "tmp": tmp, "batches": batches}


@pytest.mark.timeout(400)
def test_two_workers_tracked_in_mlflow(two_workers):
    out, uri = two_workers["out"], two_workers["uri"]
    assert out.steps == STEPS and out.stopped == "max_steps"
    assert out.checkpoint is not None and out.checkpoint.exists()
    run = tracking.get_run(out.run_id, uri)
    assert run.info.status == "FINISHED"
    p, m, t = run.data.params, run.data.metrics, run.data.tags
    assert p["train.batch_size"] == str(BATCH) and p["train.num_workers"] == "2" and p["model"] == "tiny-llama"
    assert p["data.tasks"] == str(TASKS)
    for k in ("loss/total", "loss/edit", "loss/loc", "train/edit_success", "val/edit_success", "val/score",
              "val/counterfact/reliability", "val/recent/reliability", "val/recent/locality",
              "system/cpu_percent", "system/worker_rss_mb"):
        assert k in m, (k, sorted(m))
    assert [s for s, _ in tracking.metric_history(out.run_id, "val/score", uri)] == [3, 6]
    assert {t[k] for k in ("kind", "mode", "method")} == {"train", "instructedit", "InstructEdit"}
    assert t["tasks"] == "counterfact,recent" and len(t["dataset_hash"]) == 64 and t["git_commit"]
    arts = set(tracking.list_artifacts(out.run_id, "", uri)) | set(tracking.list_artifacts(out.run_id, "checkpoint", uri))
    assert {"config.yaml", "manifest.json", "val_table.csv", "checkpoint/editor.pt"} <= arts, arts
    table = Path(tracking.download_artifacts(out.run_id, "val_table.csv", tracking_uri=uri)).read_text()
    assert table.startswith("step,task,best,") and "counterfact" in table and "recent" in table


def test_workers_see_different_data_and_global_batch_is_fixed(two_workers):
    b = two_workers["batches"]
    assert set(b) == {"rank-0", "rank-1"}
    last = {r: {e["step"]: e["case_ids"] for e in b[r]} for r in b}  # the completed attempt's batches
    for step in range(STEPS):
        ids0, ids1 = last["rank-0"][step], last["rank-1"][step]
        assert len(ids0) == len(ids1) == BATCH // 2
        assert not set(ids0) & set(ids1), step
    seen0 = {i for s in last["rank-0"].values() for i in s}
    seen1 = {i for s in last["rank-1"].values() for i in s}
    assert seen0 != seen1


def test_killed_worker_resumes_from_last_checkpoint(two_workers):
    tmp, out = two_workers["tmp"], two_workers["out"]
    marker = json.loads((tmp / "fault.marker").read_text())
    assert marker["step"] == 4 and marker["rank"] == 1
    steps1 = [e["step"] for e in two_workers["batches"]["rank-1"]]
    # first attempt 0..3 then dies at 4; the restart resumes at step 3 (the step-3 checkpoint) and goes on
    assert steps1 == [0, 1, 2, 3, 3, 4, 5], steps1
    kept = sorted(p.name for p in out.ray.checkpoints)
    assert kept == ["step-000003", "step-000006"], kept
    state = load_resume_state(out.ray.run_dir / "step-000006")
    assert state["step"] == STEPS and state["optimizer"]["state"]
    hist = tracking.metric_history(out.run_id, "loss/total", two_workers["uri"])
    assert max(s for s, _ in hist) == STEPS and {s for s, _ in hist} == set(range(1, STEPS + 1))


def test_two_workers_match_one_worker(two_workers, tmp_path):
    """2 workers x B/2 (DDP) == 1 worker x B (plain loop) after 3 steps: same editor weights."""
    cfg = small_config(1)
    train = canonical_order(load_records(cfg, "train", tasks=TASKS))
    val = canonical_order(load_records(cfg, "val", tasks=TASKS))
    cfg3 = small_config(1, **{"train.max_steps": 3})
    train_editor(cfg3, train, val, tmp_path / "one", verbose=False)
    one = torch.load(tmp_path / "one" / "step-000003" / "state.pt", weights_only=False)
    two = load_resume_state(two_workers["out"].ray.run_dir / "step-000003")
    assert one["step"] == two["step"] == 3
    assert one["editor"].keys() == two["editor"].keys()
    for k, v in one["editor"].items():
        torch.testing.assert_close(two["editor"][k], v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
