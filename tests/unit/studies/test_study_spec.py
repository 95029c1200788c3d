"""Study definitions without Ray: YAML -> StudySpec, search spaces, trial configs, results tables."""

from pathlib import Path

import pytest
import yaml
from instructedit.config import ConfigError, DataConfig, load_run_config, load_task, run_model_config
from instructedit.studies.runner import (
    TrialRow,
    best_trial,
    expected_trials,
    param_space,
    summary_rows,
)
from instructedit.studies.spec import decode, encode, list_studies, load_study, tasks_under_test
from instructedit.studies.trial import StudyHooks, trial_tags

SHIPPED = ["convsent-balance", "hparams", "instructions", "smoke", "task-scaling"]


@pytest.fixture(autouse=True)
def no_instruction_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTEDIT_INSTRUCTION_SETS", str(tmp_path / "sets"))


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return p


MINIMAL = """
overrides: {model: tiny-llama, data.on_error: skip}
space:
  data.tasks: {grid: [[recent], [recent, counterfact]]}
metric: val/score
"""


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_study_loads_and_every_arm_is_a_valid_config(name):
    assert set(SHIPPED) <= set(list_studies())
    spec = load_study(name)  # deep check: each categorical arm applied to the base config validates
    assert spec.name == name and spec.space and spec.metric == "val/score" and spec.test.split == "test"
    assert spec.results and all(m.startswith("test/") for m in spec.results)
    assert expected_trials(spec) >= 2
    base = spec.base_config()
    for p in spec.space:
        for v in p.labels() if p.categorical else [p.low, p.high]:
            cfg = spec.trial_config({p.key: v})
            assert cfg.validate() is cfg
            assert base.model == cfg.model


def test_task_scaling_matches_the_paper_design():
    spec = load_study("task-scaling")
    assert spec.metric == "val/score" and spec.mode == "max"  # ZsRE is a result, never the objective
    assert spec.results[0] == "test/zsre/reliability"
    arms = [spec.trial_config({"data.tasks": v}).data.tasks for v in spec.param("data.tasks").labels()]
    assert arms == [("recent",), ("recent", "counterfact"), ("recent", "counterfact", "convsent")]
    cfg = spec.trial_config({"data.tasks": spec.param("data.tasks").labels()[1]})
    assert tasks_under_test(spec.test, cfg) == ["zsre", "recent", "counterfact"]
    assert cfg.model == "smollm2-135m"
    # an equal budget in training edits: every arm runs the same steps, no wall-clock guard cuts one short
    for v in spec.param("data.tasks").labels():
        arm = spec.trial_config({"data.tasks": v})
        assert arm.train.max_steps == 600 and arm.train.time_budget_s is None


def test_a_step_budget_lifts_the_base_configs_time_guard():
    from instructedit.config import load_run_config

    assert load_run_config("instructedit-smollm2").train.time_budget_s == 3600  # the run config's guard
    for name in ("table3", "table3-single", "task-scaling", "instructions"):
        cfg = load_study(name).base_config()
        assert cfg.train.max_steps == 600 and cfg.train.time_budget_s is None, name
    timed = load_study("hparams")  # a study with a wall-clock budget keeps it
    assert timed.base_config().train.time_budget_s == timed.budget.time_budget_s


def test_instructions_study_drops_the_optimised_arm_until_the_set_exists(tmp_path, monkeypatch):
    spec = load_study("instructions")
    assert spec.param("setting").values == ("none", "seen", "unseen")
    assert any("optimized" in n for n in spec.notes)
    none = spec.trial_config({"setting": "none"})
    assert none.mode == "multi-task" and none.data.instruction_setting == "none"
    unseen = spec.trial_config({"setting": "unseen"})
    assert unseen.data.instruction_setting == "seen"  # trained with the seen pool ...
    assert spec.trial_plan({"setting": "unseen"}).instruction_setting == "unseen"  # ... tested unseen
    assert spec.trial_plan({"setting": "seen"}).instruction_setting == ""
    for arm in spec.param("setting").values:  # seen vs unseen on the training tasks' test splits, not ZsRE
        cfg = spec.trial_config({"setting": arm})
        assert tasks_under_test(spec.trial_plan({"setting": arm}), cfg) == ["counterfact", "recent", "convsent"]
    assert spec.trial_plan({"setting": "unseen"}).split == "test" and spec.metric == "val/score"

    sets = tmp_path / "sets"
    sets.mkdir()
    (sets / "optimized.yaml").write_text(yaml.safe_dump({"name": "optimized", "tasks": {
        "recent": [{"id": "o1", "text": "Update the fact."}]}}))
    spec = load_study("instructions")
    assert spec.param("setting").values == ("none", "seen", "unseen", "optimised") and not spec.notes
    assert spec.trial_config({"setting": "optimised"}).data.instruction_set == "optimized"


def test_convsent_balance_arms_and_the_balance_override():
    spec = load_study("convsent-balance")
    full = spec.trial_config({"balance": "full"})
    balanced = spec.trial_config({"balance": "balanced"})
    assert full.data.balance == {"convsent": None} and balanced.data.balance == {"convsent": 1156}
    assert trial_tags(spec, {"balance": "full"}, "t1", "trial_t1")["balance"] == "full"

    from instructedit.data.pipeline import finish_task
    from instructedit.data.record import EditRecord, Probe

    task = load_task("convsent")  # balance_to: 1427 in the YAML
    recs = [EditRecord(task="convsent", case_id=f"c{i}", split="train", subject="s", prompt="p", target_new="t",
                       locality=[Probe(kind="k", prompt="q", answer=["a"])]) for i in range(30)]
    n = lambda data: len(finish_task(list(recs), task, data)[0]["train"])
    assert n(DataConfig()) == 30  # 30 < 1427: kept whole
    assert n(DataConfig(balance={"convsent": 12})) == 12
    assert n(DataConfig(balance={"convsent": None})) == 30
    with pytest.raises(ConfigError, match="data.balance.convsent"):
        load_run_config(None, {"model": "tiny-llama", "data.balance": {"convsent": 0}})


def test_hparams_study_searches_editor_and_edited_layers():
    spec = load_study("hparams")
    assert spec.searcher == "optuna" and spec.scheduler.type == "asha"
    space = param_space(spec)
    assert set(space) == {"editor.edit_lr", "editor.lr", "editor.rank", "layers", "editor.c_loc"}
    assert type(space["layers"]).__name__ == "Categorical"  # no grid_search under optuna
    cfg = spec.trial_config({"editor.edit_lr": 3e-4, "editor.lr": 1e-4, "editor.rank": 64, "layers": "last1",
                             "editor.c_loc": 10.0})
    assert cfg.editor.edited_layers == (-1,) and cfg.editor.rank == 64 and cfg.editor.c_loc == 10.0
    assert run_model_config(cfg).edited_layers == (-1,)
    assert run_model_config(spec.base_config()).edited_layers == (-3, -2, -1)  # the model YAML's


def test_precedence_base_overrides_budget_set_then_trial(tmp_path):
    p = write(tmp_path, MINIMAL + "budget: {max_steps: 7}\n")
    spec = load_study(p)
    assert spec.base_config().train.max_steps == 7
    assert spec.base_config({"train.max_steps": 9}).train.max_steps == 9
    cfg = spec.trial_config({"data.tasks": encode(["recent", "counterfact"])}, {"data.tasks": ["convsent"]})
    assert cfg.data.tasks == ("recent", "counterfact")
    spec = load_study(p, {"study.budget.max_steps": 3, "study.test.max_records": 5})
    assert spec.base_config().train.max_steps == 3 and spec.test.max_records == 5


@pytest.mark.parametrize("space, match", [
    ("{editor.lr: {between: [1, 2]}}", "must be one of"),
    ("{editor.lr: {grid: []}}", "non-empty list"),
    ("{editor.lr: {loguniform: [0, 1]}}", "need 0 < low"),
    ("{editor.lr: {uniform: [1]}}", r"\[low, high\]"),
    ("{editor.lr: {loguniform: [1.0e-5, 1.0e-3]}}", "searcher grid needs"),
    ("{editor.rank: {grid: [8, oops]}}", "editor.rank"),
    ("{data.tasks: {grid: [[recent], [nosuchtask]]}}", "nosuchtask"),
    ("{arm: {grid: {a: {editor.nope: 1}}}}", "nope"),
    # a bundle's label becomes a tag of its name: `method` would replace the method's display name
    ("{method: {grid: {a: {mode: multi-task}}}}", "overwrite the runs' 'method' tag"),
    ("{seed: {grid: {a: {train.seed: 1}}}}", "overwrite the runs' 'seed' tag"),
])
def test_bad_spaces_are_rejected_with_the_key(tmp_path, space, match):
    p = write(tmp_path, f"overrides: {{model: tiny-llama}}\nspace: {space}\nmetric: val/reliability\n")
    with pytest.raises(ConfigError, match=match):
        load_study(p)


def test_bad_study_fields_are_rejected(tmp_path):
    for extra, match in [("mode: up\n", "mode must be"), ("searcher: hyperopt\n", "searcher"),
                         ("scheduler: {type: pbt}\n", "scheduler.type"), ("trials: 0\n", "trials"),
                         ("nonsense: 1\n", "unknown key"), ("metric: reliability\n", "not a metric key"),
                         ("test: {split: val}\n", "study.test.split"),
                         ("resources: {cpu: 0}\n", "needs some cpu")]:
        with pytest.raises(ConfigError, match=match):
            load_study(write(tmp_path, MINIMAL + extra))
    with pytest.raises(ConfigError, match="unknown study"):
        load_study("no-such-study")
    with pytest.raises(ConfigError, match="must start with 'study.'"):
        load_study(write(tmp_path, MINIMAL), {"train.max_steps": 3})


def test_param_space_per_searcher_and_labels(tmp_path):
    p = write(tmp_path, MINIMAL + "searcher: random\n" + "trials: 2\n")
    spec = load_study(p, {"study.space.editor.lr": {"loguniform": [1e-5, 1e-3]}})
    space = param_space(spec)
    assert space["data.tasks"] == {"grid_search": ['["recent"]', '["recent","counterfact"]']}
    assert type(space["editor.lr"]).__name__ == "Float"
    assert expected_trials(spec) == 4  # 2 grid points x 2 samples
    point = {"data.tasks": '["recent","counterfact"]', "editor.lr": 2e-4}
    assert spec.trial_overrides(point) == {"data.tasks": ["recent", "counterfact"], "editor.lr": 2e-4}
    assert spec.labels(point) == {"data.tasks": "recent,counterfact", "editor.lr": "0.0002"}
    assert decode(encode({"convsent": None})) == {"convsent": None} and decode("seen") == "seen"


def _row(tid, status, metric=None, **kw):
    # The test number runs against the val objective: a test-selected study would pick another trial.
    m = {} if metric is None else {"val/score": metric, "test/zsre/reliability": 1.0 - metric}
    return TrialRow(trial_id=tid, trial_name=f"trial_{tid}", status=status, params={"data.tasks": tid}, metrics=m, **kw)


def test_best_trial_and_summary_order():
    rows = [_row("a", "done", 0.2), _row("b", "failed", error="boom"), _row("c", "done", 0.7),
            _row("d", "stopped"), _row("e", "done", float("nan"))]
    assert best_trial(rows, "val/score", "max").trial_id == "c"
    assert best_trial(rows, "val/score", "min").trial_id == "a"
    assert best_trial([_row("b", "failed")], "val/score", "max") is None
    table = summary_rows(rows, "val/score", "max", ("test/zsre/reliability",))
    assert [r["trial_id"] for r in table] == ["c", "a", "e", "b", "d"]
    assert list(table[0])[:6] == ["trial_id", "trial_name", "status", "param:data.tasks", "val/score",
                                  "test/zsre/reliability"]
    assert table[0]["test/zsre/reliability"] == pytest.approx(0.3)  # reported, not what ranked it
    assert table[3]["error"] == "boom" and table[3]["status"] == "failed"


def test_hooks_fail_only_matching_trials():
    hooks = StudyHooks(fail_if={"editor.edit_lr": 0.02}, fail_step=1)
    assert hooks.worker_hooks({"editor.edit_lr": 0.01}) is None
    assert hooks.worker_hooks({"editor.edit_lr": 0.02}).fail_step == 1
    assert StudyHooks().worker_hooks({"editor.edit_lr": 0.02}) is None


def test_cli_list_and_show(capsys):
    from instructedit.cli import main

    assert main(["study", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SHIPPED)
    assert main(["study", "smoke", "--show", "--set", "train.max_steps=6", "study.test.max_records=2"]) == 0
    out = capsys.readouterr().out
    shown = yaml.safe_load(out.split("# base run config")[0])
    assert shown["test"]["max_records"] == 2 and shown["space"]["data.tasks"]["grid"][0] == ["recent"]
    assert "max_steps: 6" in out.split("# base run config")[1]
    assert main(["study", "smoke", "--show", "--set", "study.mode=up"]) == 2


def test_hparams_builds_optuna_searcher_and_asha_scheduler():
    from instructedit.studies.runner import _scheduler, _search_alg

    spec = load_study("hparams")
    base = spec.base_config()
    asha = _scheduler(spec, base)
    assert type(asha).__name__ == "AsyncHyperBandScheduler" and asha.metric == "val/score"
    assert asha._max_t == base.train.max_steps // base.train.val_every + 1
    searcher = _search_alg(spec)
    assert searcher.metric == "val/score" and searcher.mode == "max"
    searcher.on_trial_result("t0", {"val/score": 0.3, "training_iteration": 1})  # intermediate: ignored
    assert _scheduler(load_study("smoke"), base) is None and _search_alg(load_study("smoke")) is None
