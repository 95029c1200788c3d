"""Task lists come from the task registry (configs/tasks/*.yaml: `order`, `hold_out`), not from code."""

import argparse

import pytest
from instructedit import config
from instructedit.config import DataConfig, list_registry, load_task, order_tasks, task_names


def test_registry_order_training_tasks_then_hold_out():
    assert task_names() == ["counterfact", "recent", "convsent", "counterfact-mend", "zsre"]
    assert task_names(hold_out=False) == ["counterfact", "recent", "convsent", "counterfact-mend"]
    assert task_names(hold_out=True) == ["zsre"]


def test_every_shipped_task_has_a_distinct_order():
    orders = [load_task(t).order for t in list_registry("tasks")]
    assert None not in orders and len(set(orders)) == len(orders)


def test_run_defaults_agree_with_the_registry():
    # DataConfig's defaults are a default run's choice, but they must not drift from the registry:
    # its hold-out tasks are exactly the YAMLs marked hold_out, its training tasks are training tasks.
    d = DataConfig()
    assert d.hold_out == tuple(task_names(hold_out=True))
    assert set(d.tasks) <= set(task_names(hold_out=False))
    assert list(d.tasks) == order_tasks(d.tasks)


def test_unknown_tasks_after_known_ones_alphabetically_hold_out_last():
    got = order_tasks(["zsre", "zzz", "aaa", "convsent", "recent", "counterfact", "recent"])
    assert got == ["counterfact", "recent", "convsent", "aaa", "zzz", "zsre"]
    # an explicit hold-out collection (a run's data.hold_out) replaces the YAML flags
    assert order_tasks(["zsre", "recent", "aaa"], hold_out=("recent",)) == ["zsre", "aaa", "recent"]
    assert order_tasks(["zsre", "recent"], hold_out=()) == ["recent", "zsre"]


def test_yaml_reads_are_cached_and_an_edited_registry_is_read_again(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    shipped = (config.CONFIG_DIR / "tasks" / "convsent.yaml").read_text()
    (tmp_path / "tasks" / "b.yaml").write_text(shipped.replace("order: 30", "order: 1"))
    (tmp_path / "tasks" / "a.yaml").write_text(shipped.replace("order: 30", "order: 2"))
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
    parsed = []
    real = config.load_task
    monkeypatch.setattr(config, "load_task", lambda name: parsed.append(name) or real(name))
    assert task_names() == ["b", "a"]
    assert sorted(parsed) == ["a", "b"]
    assert task_names() == ["b", "a"] and order_tasks(["a", "b"]) == ["b", "a"]
    assert len(parsed) == 2  # no reparse
    text = shipped.replace("order: 30", "order: 3") + "hold_out: true\n"
    (tmp_path / "tasks" / "c.yaml").write_text(text)  # a new task YAML is seen
    assert task_names() == ["b", "a", "c"] and task_names(hold_out=True) == ["c"]


def test_evaluation_default_tasks_end_with_the_registry_hold_out_tasks():
    from instructedit.evaluate.run import default_tasks, hold_out_tasks

    assert hold_out_tasks() == task_names(hold_out=True)
    assert default_tasks(["recent"]) == ["recent", *task_names(hold_out=True)]


def test_prepare_without_config_covers_the_registry(monkeypatch, tmp_path):
    # `instructedit prepare` with no --config: every training task and every hold-out task.
    import instructedit.data.prepare as prep
    import instructedit.ray_session as rs
    from instructedit.commands import prepare as command
    from instructedit.data.pipeline import ALL_HOLD_OUT, ALL_TASKS

    seen = {}

    def fake_prepare(cfg, out, **kw):
        seen["cfg"] = cfg
        return {"totals": {"kept": 0, "rejected": 0, "balanced_out": 0, "capped": 0, "read": 0}}

    monkeypatch.setattr(prep, "prepare", fake_prepare)
    monkeypatch.setattr(rs, "setup_logging", lambda *a, **k: None)
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    assert command.run(p.parse_args(["--out", str(tmp_path / "o"), "--quiet"])) == 0
    cfg = seen["cfg"]
    assert list(cfg.data.tasks) == task_names(hold_out=False) == list(ALL_TASKS)
    assert list(cfg.data.hold_out) == task_names(hold_out=True) == list(ALL_HOLD_OUT)


@pytest.mark.parametrize("bad", ["order: first\n", "order: true\n"])
def test_order_must_be_an_integer(tmp_path, monkeypatch, bad):
    (tmp_path / "tasks").mkdir()
    shipped = (config.CONFIG_DIR / "tasks" / "recent.yaml").read_text().replace("order: 20", bad.strip())
    (tmp_path / "tasks" / "x.yaml").write_text(shipped)
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
    with pytest.raises(config.ConfigError, match=r"x.yaml.*order: expected an integer"):
        load_task("x")
