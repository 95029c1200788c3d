"""`instructedit train --seeds`: one run per training seed, data.seed shared, grouped in MLflow.

Ray Train is replaced by a stub that writes a fake best checkpoint, so the real driver (train_run:
records, MLflow params, tags, artifacts) runs in seconds; no editor is trained here.
"""

from pathlib import Path

import pytest
from instructedit import tracking
from instructedit.cli import build_parser, main
from instructedit.commands.train import plan
from instructedit.config import ConfigError, to_dict
from instructedit.train import run as run_mod
from instructedit.train.trainer import RayTrainResult


def args_of(*argv):
    return build_parser().parse_args(["train", "--config", "tiny-test", *argv])


def test_seeds_give_one_config_per_seed_differing_only_in_train_seed_and_name():
    cfgs, tags = plan(args_of("--seeds", "0", "1", "2", "--set", "data.seed=5"))
    assert [c.train.seed for c in cfgs] == [0, 1, 2]
    assert [c.name for c in cfgs] == ["tiny-test-s0", "tiny-test-s1", "tiny-test-s2"]
    assert {c.data.seed for c in cfgs} == {5}  # splits, tags and test records are shared
    assert tags == {"seed_group": "tiny-test"}
    first = to_dict(cfgs[0])
    for c in cfgs[1:]:
        d = to_dict(c)
        assert {k for k in d if d[k] != first[k]} == {"name", "train"}
        assert {k for k in d["train"] if d["train"][k] != first["train"][k]} == {"seed"}


def test_a_single_seed_keeps_the_name_and_sets_train_seed():
    (cfg,), tags = plan(args_of("--seed", "3"))
    assert cfg.train.seed == 3 and cfg.name == "tiny-test" and cfg.data.seed == 0 and tags == {}
    (cfg,), tags = plan(args_of())
    assert cfg.train.seed == 0 and cfg.name == "tiny-test" and tags == {}
    (cfg,), tags = plan(args_of("--seeds", "7"))  # a group of one is still a group
    assert cfg.name == "tiny-test-s7" and tags == {"seed_group": "tiny-test"}


@pytest.mark.parametrize("argv, match", [
    (["--seeds", "0", "0"], "repeats a seed"),
    (["--seeds", "0", "1", "--resume", "tiny-test-20250101-000000-000"], "--resume RUN names one Ray run"),
    (["--seeds", "0", "1", "--set", "train.seed=4"], "drop --set train.seed"),
    (["--seeds", "-1"], "not a non-negative integer"),
])
def test_bad_seed_arguments_are_config_errors(argv, match, capsys):
    with pytest.raises(ConfigError, match=match):
        plan(args_of(*argv))
    assert main(["train", "--config", "tiny-test", *argv]) == 2
    assert "config error" in capsys.readouterr().err


def test_seed_and_seeds_are_exclusive(capsys):
    with pytest.raises(SystemExit) as e:
        args_of("--seed", "1", "--seeds", "0", "1")
    assert e.value.code == 2


@pytest.fixture
def fake_ray(monkeypatch, tmp_path):
    """train_on_ray stand-in: records what each run trains on, leaves a best checkpoint file."""
    calls = []

    def train_on_ray(cfg, train, val, *, name, storage_path, mlflow_run_id, tracking_uri, **kw):
        calls.append({"cfg": cfg, "name": name, "train": train, "val": val, "run_id": mlflow_run_id})
        if cfg.train.seed == 13:
            raise RuntimeError("worker lost")
        best = Path(storage_path) / name / "step-000002"
        best.mkdir(parents=True)
        (best / "editor.pt").write_bytes(b"fake")
        tracking.log_metrics({"val/score": 0.1 * cfg.train.seed, "val/edit_success": 0.5}, step=2, run_id=mlflow_run_id)
        return RayTrainResult(run_dir=Path(storage_path) / name, best_checkpoint=best,
                              best_metrics={"val/score": 0.1 * cfg.train.seed}, best_step=2, steps=2,
                              stopped="max_steps")

    monkeypatch.setattr(run_mod, "train_on_ray", train_on_ray)
    monkeypatch.setattr(run_mod, "init_ray", lambda *a, **k: None)
    return calls


def test_each_seed_is_its_own_tracked_run_with_shared_records(fake_ray, tmp_path, shared_data, capsys, new_store):
    uri = new_store(tmp_path / "mlflow.db")
    storage = tmp_path / "runs"
    rc = main(["train", "--config", "tiny-test", "--seeds", "0", "1", "2", "--tracking-uri", uri,
               "--storage-path", str(storage), "--quiet", "--set", "data.max_records=8"])
    assert rc == 0
    assert [c["cfg"].train.seed for c in fake_ray] == [0, 1, 2]
    assert all(c["name"].startswith(f"tiny-test-s{s}-") for c, s in zip(fake_ray, [0, 1, 2]))
    runs_on_disk = [p.name.split("-2")[0] for p in storage.iterdir() if (p / run_mod.RUN_INFO).exists()]
    assert sorted(runs_on_disk) == ["tiny-test-s0", "tiny-test-s1", "tiny-test-s2"]
    # every seed trains and validates on the very same records (data.seed is shared)
    key = lambda recs: [(r.task, r.case_id, r.edit_input) for r in recs]
    assert all(key(c["train"]) == key(fake_ray[0]["train"]) and key(c["val"]) == key(fake_ray[0]["val"])
               for c in fake_ray)
    runs = tracking.search_runs("instructedit-tests", "tags.seed_group = 'tiny-test'", tracking_uri=uri)
    assert len(runs) == 3 and set(runs["status"]) == {"FINISHED"}
    assert sorted(runs["tags.seed"]) == ["0", "1", "2"] and sorted(runs["params.seed"]) == ["0", "1", "2"]
    assert sorted(runs["params.train.seed"]) == ["0", "1", "2"] and set(runs["params.data.seed"]) == {"0"}
    assert sorted(runs["tags.mlflow.runName"].str.split("-2").str[0]) == ["tiny-test-s0", "tiny-test-s1",
                                                                          "tiny-test-s2"]
    out = capsys.readouterr().out
    assert "seed group 'tiny-test'" in out and "(± sd over seeds)" in out


def test_a_failed_seed_does_not_stop_the_others(fake_ray, tmp_path, shared_data, capsys, new_store):
    uri = new_store(tmp_path / "mlflow.db")
    rc = main(["train", "--config", "tiny-test", "--seeds", "13", "4", "--tracking-uri", uri,
               "--storage-path", str(tmp_path / "runs"), "--quiet", "--set", "data.max_records=8"])
    assert rc == 1 and [c["cfg"].train.seed for c in fake_ray] == [13, 4]
    assert "seed 13 failed: RuntimeError: worker lost" in capsys.readouterr().err
    runs = tracking.search_runs("instructedit-tests", "tags.seed_group = 'tiny-test'", tracking_uri=uri)
    assert dict(zip(runs["tags.seed"], runs["status"])) == {"13": "FAILED", "4": "FINISHED"}


def test_a_plain_run_carries_its_seed_but_no_group(fake_ray, tmp_path, shared_data, new_store):
    uri = new_store(tmp_path / "mlflow.db")
    assert main(["train", "--config", "tiny-test", "--seed", "2", "--tracking-uri", uri, "--storage-path",
                 str(tmp_path / "runs"), "--quiet", "--set", "data.max_records=8"]) == 0
    runs = tracking.search_runs("instructedit-tests", "tags.kind = 'train'", tracking_uri=uri)
    assert len(runs) == 1 and runs["tags.seed"][0] == "2" and runs["params.seed"][0] == "2"
    assert "tags.seed_group" not in runs or runs["tags.seed_group"].isna().all()
    assert fake_ray[0]["name"].startswith("tiny-test-2")  # the name is kept: no -s suffix


def test_resume_picks_the_runs_of_its_own_name_only(tmp_path):
    root = tmp_path
    for name in ["demo-s0-20250101-000000-001", "demo-20250101-000000-002", "demo-fast-20250101-000000-003"]:
        (root / name).mkdir()
        (root / name / run_mod.RUN_INFO).write_text("{}")
    assert run_mod._latest_run_name(root, "demo") == "demo-20250101-000000-002"
    assert run_mod._latest_run_name(root, "demo-s0") == "demo-s0-20250101-000000-001"
    assert run_mod._latest_run_name(root, "demo-s1") is None
