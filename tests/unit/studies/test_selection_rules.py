"""Selection never sees test: study objectives, ASHA metrics and early stopping read validation
splits of the training tasks only; anything else fails at load time with the file and the key."""

from pathlib import Path

import pytest
import yaml
from instructedit.config import ConfigError, load_run_config, selection_error
from instructedit.studies.spec import list_studies, load_study

HINT = "select on val/<training task>/... or val/score"


@pytest.fixture(autouse=True)
def no_instruction_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTEDIT_INSTRUCTION_SETS", str(tmp_path / "sets"))


def study_yaml(tmp_path: Path, **fields) -> Path:
    doc = {"overrides": {"model": "tiny-llama", "data.on_error": "skip"},
           "space": {"data.tasks": {"grid": [["recent"], ["recent", "counterfact"]]}}, **fields}
    p = tmp_path / "sel.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_the_default_objective_is_the_validation_score(tmp_path):
    spec = load_study(study_yaml(tmp_path))
    assert spec.metric == "val/score" and spec.mode == "max"


@pytest.mark.parametrize("metric, why", [
    ("test/zsre/reliability", "selects on the test split"),
    ("test/avg/edit_success", "selects on the test split"),
    ("test/recent/reliability", "selects on the test split"),
    ("train/edit_success", "selects on the train split"),
    ("val/zsre/reliability", "selects on the hold-out task 'zsre'"),
    ("val/avg/edit_success", "val/edit_success"),
    ("score", "not a metric key"),
])
def test_a_study_selecting_on_test_train_or_hold_out_is_rejected(tmp_path, metric, why):
    p = study_yaml(tmp_path, metric=metric)
    with pytest.raises(ConfigError) as e:
        load_study(p)
    msg = one_line(e)
    assert msg.startswith(f"{p}: study.metric: {metric!r}") and why in msg and HINT in msg


def test_the_shallow_load_of_list_checks_the_split_too(tmp_path):
    with pytest.raises(ConfigError, match="study.metric: 'test/zsre/reliability' selects on the test split"):
        load_study(study_yaml(tmp_path, metric="test/zsre/reliability"), check=False)


def test_the_scheduler_metric_is_checked_as_well(tmp_path):
    p = study_yaml(tmp_path, searcher="random", scheduler={"type": "asha", "metric": "test/avg/reliability"})
    with pytest.raises(ConfigError) as e:
        load_study(p)
    assert one_line(e).startswith(f"{p}: study.scheduler.metric: 'test/avg/reliability' selects on the test split")
    # scheduler off: its (unused) metric is not an objective
    assert load_study(study_yaml(tmp_path, scheduler={"type": "none", "metric": "test/x/y"})).scheduler.type == "none"


def test_a_study_override_cannot_sneak_test_back_in(tmp_path):
    with pytest.raises(ConfigError, match="study.metric: 'test/zsre/reliability' selects on the test split"):
        load_study(study_yaml(tmp_path), {"study.metric": "test/zsre/reliability"})


def test_a_val_metric_must_name_a_training_task_of_every_arm(tmp_path):
    assert load_study(study_yaml(tmp_path, metric="val/recent/reliability")).metric == "val/recent/reliability"
    with pytest.raises(ConfigError) as e:  # the [recent] arm does not train on counterfact
        load_study(study_yaml(tmp_path, metric="val/counterfact/reliability"))
    msg = one_line(e)
    assert "study.metric: 'val/counterfact/reliability' names 'counterfact', not a training task" in msg
    assert "space.data.tasks" in msg


def test_a_hold_out_task_named_in_the_study_overrides_is_rejected(tmp_path):
    p = study_yaml(tmp_path, metric="val/convsent/es")
    doc = yaml.safe_load(p.read_text())
    doc["overrides"].update({"data.tasks": ["recent", "convsent"], "data.hold_out": ["convsent"]})
    doc["space"] = {"editor.lr": {"grid": [1.0e-4, 1.0e-3]}}
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="data.tasks and data.hold_out share"):
        load_study(p)
    doc["overrides"].update({"data.tasks": ["recent"], "data.hold_out": ["convsent"]})
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="selects on the hold-out task 'convsent'"):
        load_study(p)


@pytest.mark.parametrize("name", list_studies())
def test_every_shipped_study_selects_on_validation(name):
    spec = load_study(name)
    assert spec.metric.startswith("val/") and selection_error(spec.metric) == ""
    if spec.scheduler.type != "none":
        assert spec.scheduler.metric.startswith("val/")
    assert all(m.startswith("test/") for m in spec.results)


def _run_yaml(tmp_path: Path, metric: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({"model": "tiny-llama", "data": {"tasks": ["recent", "counterfact"],
                                                                  "hold_out": ["zsre"]},
                                 "train": {"early_stop_metric": metric}}))
    return p


@pytest.mark.parametrize("metric, why", [
    ("test/avg/edit_success", "selects on the test split"),
    ("test/recent/reliability", "selects on the test split"),
    ("train/edit_success", "selects on the train split"),
    ("val/zsre/reliability", "selects on the hold-out task 'zsre'"),
    ("val/convsent/es", "names 'convsent', not a training task"),
    ("loss/total", "not a validation metric"),
])
def test_a_run_yaml_selecting_on_test_or_hold_out_is_rejected(tmp_path, metric, why):
    p = _run_yaml(tmp_path, metric)
    with pytest.raises(ConfigError) as e:
        load_run_config(str(p))
    msg = one_line(e)
    assert msg.startswith(f"{p}: train.early_stop_metric: {metric!r}") and why in msg


@pytest.mark.parametrize("metric", ["val/score", "val/edit_success", "val/recent/reliability",
                                    "val/counterfact/locality", "val/portability/reasoning"])
def test_validation_metrics_of_training_tasks_are_accepted(tmp_path, metric):
    assert load_run_config(str(_run_yaml(tmp_path, metric))).train.early_stop_metric == metric


def test_shipped_run_configs_select_on_validation():
    from instructedit.config import list_registry

    for name in list_registry("runs"):
        cfg = load_run_config(name)
        assert cfg.train.early_stop_metric.startswith("val/"), name
        assert not set(cfg.data.tasks) & set(cfg.data.hold_out), name


def test_the_loop_refuses_an_early_stop_metric_it_does_not_report():
    """A val key that passes the config check but is not reported (a typo) must not silently fall
    back to val/score: the first validation raises."""
    import random

    from instructedit.data.record import EditRecord, Probe
    from instructedit.train.loop import train_editor

    rng = random.Random(0)
    recs = [EditRecord(task="counterfact", case_id=f"c{i}", prompt=f"The colour of x{i} is", target_new="red",
                       subject=f"x{i}", locality=[Probe("neighborhood", f"The home of y{i} is",
                                                        [rng.choice(["oak", "elm"])])]) for i in range(8)]
    cfg = load_run_config(None, {"model": "tiny-llama", "mode": "multi-task", "data.instruction_setting": "none",
                                 "data.tasks": ["counterfact"], "editor.rank": 8, "train.batch_size": 2,
                                 "train.max_steps": 1, "train.val_every": 1, "train.val_size": 2,
                                 "train.max_length": 32, "train.early_stop_metric": "val/counterfact/reliabilty"})
    with pytest.raises(ValueError, match="'val/counterfact/reliabilty' is not a validation metric"):
        train_editor(cfg, recs[:6], recs[6:], verbose=False)
