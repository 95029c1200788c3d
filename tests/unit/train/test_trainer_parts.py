"""The parts of the Ray Train wiring that need no Ray: fault hooks, checkpoint helpers, manifest and
tags, the val table, the train command's arguments."""

import json
from pathlib import Path

import pytest
import torch
from instructedit import tracking
from instructedit.cli import build_parser
from instructedit.config import load_run_config
from instructedit.data.record import EditRecord
from instructedit.editor import methods
from instructedit.train import checkpoint as ck
from instructedit.train.run import dataset_manifest, run_tags, val_table, write_csv
from instructedit.train.trainer import WorkerHooks, canonical_order, resolve_use_gpu


def rec(task, cid):
    return EditRecord(task=task, case_id=cid, prompt="p", target_new="t")


def test_fault_fires_once_per_marker(tmp_path):
    hooks = WorkerHooks(fault_step=3, fault_rank=1, fault_marker=str(tmp_path / "m"), fault_kill=False)
    hooks.fault(0)(3)  # another rank: nothing
    hooks.fault(1)(2)  # another step: nothing
    with pytest.raises(RuntimeError, match="injected worker fault at step 3"):
        hooks.fault(1)(3)
    assert json.loads((tmp_path / "m").read_text())["step"] == 3
    hooks.fault(1)(3)  # the restarted attempt runs clean


def test_fail_step_always_raises():
    hooks = WorkerHooks(fail_step=2)
    hooks.fault(0)(1)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="injected training failure"):
            hooks.fault(0)(2)


def test_batch_log(tmp_path):
    assert WorkerHooks().on_batch(0) is None
    hook = WorkerHooks(batch_log_dir=str(tmp_path)).on_batch(1)
    hook(0, [rec("a", "x"), rec("a", "y")])
    row = json.loads((tmp_path / "rank-1.jsonl").read_text())
    assert row["rank"] == 1 and row["step"] == 0 and row["case_ids"] == ["x", "y"]


def test_canonical_order_and_gpu_setting():
    rs = [rec("b", "1"), rec("a", "2"), rec("a", "1")]
    assert [(r.task, r.case_id) for r in canonical_order(rs)] == [("a", "1"), ("a", "2"), ("b", "1")]
    assert resolve_use_gpu("true") is True and resolve_use_gpu("false") is False


def test_checkpoint_helpers(tmp_path):
    assert ck.step_dir_name(42) == "step-000042" and ck.step_of("/x/step-000042/") == 42 and ck.step_of("x") is None
    for s in (6, 3):
        d = tmp_path / ck.step_dir_name(s)
        d.mkdir()
        (d / ck.EDITOR_FILE).write_bytes(b"")
        torch.save({"step": s}, d / ck.STATE_FILE)
    (tmp_path / "checkpoint_manager_snapshot.json").write_text("{}")
    assert [p.name for p in ck.list_step_checkpoints(tmp_path)] == ["step-000003", "step-000006"]
    assert ck.load_resume_state(tmp_path / "step-000006")["step"] == 6
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        ck.load_resume_state(tmp_path)


def test_manifest_hash_and_tags(tmp_path):
    cfg = load_run_config(None, {"model": "tiny-llama", "data.tasks": ["counterfact", "recent"]})
    text, h = dataset_manifest(cfg, [rec("recent", "1"), rec("counterfact", "2")], [rec("recent", "3")])
    m = json.loads(text)
    assert m["counts"] == {"counterfact": {"train": 1}, "recent": {"train": 1, "val": 1}} and len(h) == 64
    assert dataset_manifest(cfg, [rec("counterfact", "2"), rec("recent", "1")], [rec("recent", "3")])[1] == h
    assert dataset_manifest(cfg, [rec("recent", "1")], [rec("recent", "3")])[1] != h
    prepared = tmp_path / "prep"
    prepared.mkdir()
    (prepared / "manifest.json").write_text('{"tasks": ["recent"]}\n')
    cfg2 = load_run_config(None, {"model": "tiny-llama", "data.prepared_dir": str(prepared)})
    text2, h2 = dataset_manifest(cfg2, [], [])
    assert text2 == '{"tasks": ["recent"]}\n' and h2 != h
    tags = run_tags(cfg, h)
    assert tags["kind"] == "train" and tags["method"] == methods.get("instructedit").display == "InstructEdit"
    assert tags["tasks"] == "counterfact,recent" and tags["dataset_hash"] == h


def test_val_table_from_metric_history(tmp_path, new_store):
    uri = new_store(tmp_path / "mlflow.db")
    with tracking.run("unit-val-table", tracking_uri=uri) as rid:
        for step, v in ((3, 0.25), (6, 0.5)):
            tracking.log_metrics({"val/recent/reliability": v, "val/recent/portability/reasoning": v / 2,
                                  "val/reliability": v, "val/score": v}, step=step)
        rows = val_table(rid, ["recent", "counterfact"], best_step=6)
    assert [(r["step"], r["task"], r["best"]) for r in rows] == [(3, "recent", 0), (3, "avg", 0),
                                                                 (6, "recent", 1), (6, "avg", 1)]
    assert rows[2]["portability/reasoning"] == 0.25 and rows[3]["score"] == 0.5
    text = write_csv(rows, tmp_path / "t.csv").read_text().splitlines()
    assert text[0].startswith("step,task,best,") and len(text) == 5


def test_train_command_arguments():
    args = build_parser().parse_args(["train", "--config", "demo", "--workers", "2", "--resume",
                                      "--set", "train.max_steps=5"])
    assert args.workers == 2 and args.resume is True and args.set == ["train.max_steps=5"]
    args = build_parser().parse_args(["train", "--config", "demo", "--resume", "demo-20250101"])
    assert args.resume == "demo-20250101" and args.address is None


def test_shipped_demo_config_loads():
    cfg = load_run_config("demo")
    assert cfg.model == "smollm2-135m" and cfg.mode == "instructedit" and "zsre" in cfg.data.hold_out
    assert cfg.train.batch_size % cfg.train.num_workers == 0
    assert Path(cfg.train.storage_path or "runs")


def test_worker_threads_use_the_node_cores_not_rays_one(monkeypatch):
    # Ray sets OMP_NUM_THREADS=1 in a 1-CPU worker; 0 (the default) gives each of the run's workers
    # on a node its share of that node's cores, a set value wins.
    from instructedit.config import ConfigError, TrainConfig
    from instructedit.train.trainer import worker_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert worker_threads(0, 1) == 8 and worker_threads(0, 2) == 4 and worker_threads(0, 16) == 1
    assert worker_threads(3, 2) == 3
    assert TrainConfig().torch_threads == 0
    with pytest.raises(ConfigError, match="train.torch_threads"):
        TrainConfig(torch_threads=-1)
