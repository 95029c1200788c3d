"""The method registry: torch-free, ordered, typed hyperparameters from YAML, and every method
evaluated through the same evaluate_batch (the locate-then-edit ones raise reliability)."""

import subprocess
import sys

import pytest
from editor_facts import fact_records
from instructedit.config import MODES, ConfigError
from instructedit.editor import methods


def test_registry_imports_without_torch():
    code = ("import sys, instructedit.editor.methods as m; m.get('rome').tags(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_order_names_and_lookups():
    assert methods.names() == ["pre-edit", "ft-l", "rome", "memit", "alphaedit", "single-task", "multi-task",
                               "instructedit"]
    assert tuple(methods.names(trained=True)) == MODES  # every training mode is a trained method
    assert methods.get("rome").tags() == {"mode": "rome", "method": "ROME"}
    assert methods.by_display("InstructEdit").instructed and methods.get("pre-edit").reference
    with pytest.raises(ConfigError, match="unknown method 'romee'"):
        methods.get("romee")
    assert methods.method_of({"run_config": {"mode": "multi-task"}}).name == "multi-task"
    assert methods.method_of({"method": "single-task", "run_config": {"mode": "x"}}).name == "single-task"
    assert methods.method_of({}).name == methods.DEFAULT_TRAINED


@pytest.mark.parametrize("name", methods.names(trained=False))
def test_hyperparameters_load_typed_from_yaml(name):
    m = methods.get(name)
    hp = m.load_hparams("smollm2-135m")
    assert (hp is None) == (not m.hparams)
    if hp is not None:
        assert isinstance(hp, m.hparams_class()) and m.config_path.exists()


def test_yaml_model_sections_and_overrides():
    m = methods.get("memit")
    assert m.load_hparams("gpt2-xl").mom2_weight == 20000.0
    assert m.load_hparams("llama-2-7b").mom2_weight == 15000.0  # no section: the top level
    hp = m.load_hparams("tiny-llama", {"target": {"steps": 3}, "mom2_weight": 7.0})
    assert hp.target.steps == 3 and hp.mom2_weight == 7.0 and hp.target.lr == 0.5
    with pytest.raises(ConfigError, match=r"memit.yaml \+ overrides: unknown key\(s\) \['nope'\]"):
        m.load_hparams("tiny-llama", {"nope": 1})
    with pytest.raises(ConfigError, match=r"memit.yaml \+ overrides.*mom2_weight must be > 0"):
        m.load_hparams("tiny-llama", {"mom2_weight": -1.0})
    with pytest.raises(ConfigError, match="takes no hyperparameters"):
        methods.get("pre-edit").load_hparams("tiny-llama", {"steps": 1})


@pytest.mark.parametrize("name", ["rome", "memit", "alphaedit"])
def test_evaluate_batch_with_the_method_raises_reliability(name, llama, stats_text, key_cache):
    from instructedit.evaluate.core import evaluate_batch

    recs = fact_records(4)
    pre_em, no_edits = methods.get("pre-edit").load(llama)
    m = methods.get(name)
    em, make = m.load(llama, hparams=m.load_hparams("tiny-llama", {"stats": {"text_file": stats_text}}))
    pre = evaluate_batch(pre_em, recs, no_edits, 48)
    post = evaluate_batch(em, recs, make, 48)
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)
    assert mean(post, "reliability") > mean(pre, "reliability")
    assert set(pre[0]) == set(post[0])  # the same probes and metrics as every other method
    assert mean(post, "locality") > 0.5


def test_eval_targets_build_through_the_registry(llama, stats_text, key_cache):
    from instructedit.editor.editable import EditableModel
    from instructedit.evaluate import runner

    t = runner.EvalTarget("rome", model="tiny-llama", hparams={"stats": {"text_file": stats_text}, "layer": 2})
    ident = t.identity()
    assert ident["hparams"]["layer"] == 2 and ident["hparams"]["target"]["steps"] == 25  # resolved YAML
    assert t.params()["rome.stats.text_file"] == stats_text and runner.method_tags("rome")["method"] == "ROME"
    em, make = runner.build(t)
    assert isinstance(em, EditableModel) and em.names == ["model.layers.2.mlp.down_proj"] and callable(make)
    assert runner.EvalTarget("ft-l", model="tiny-llama", hparams={"steps": 3}).params() == {
        "ftl.steps": 3, "ftl.lr": 0.01, "ftl.norm_bound": 1.0}
    assert runner.method_tags("editor", "") == {"mode": "instructedit", "method": "InstructEdit"}
    with pytest.raises(ValueError, match="is trained"):
        runner.EvalTarget("multi-task", model="tiny-llama")
    with pytest.raises(ConfigError, match="unknown method"):
        runner.EvalTarget("rome2", model="tiny-llama")
    with pytest.raises(ConfigError, match="ft-l.yaml"):
        runner.EvalTarget("ft-l", model="tiny-llama", hparams={"stats": {}}).hyperparameters()
