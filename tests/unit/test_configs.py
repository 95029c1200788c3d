"""Every shipped YAML loads into its typed config; bad values fail with the file and key named."""

import pytest
from instructedit.config import (
    ConfigError,
    RunConfig,
    from_dict,
    list_registry,
    load_model_config,
    load_run_config,
    load_task,
    to_dict,
)


@pytest.mark.parametrize("name", list_registry("runs"))
def test_every_run_config_loads(name):
    cfg = load_run_config(name)
    assert isinstance(cfg, RunConfig)
    assert from_dict(RunConfig, to_dict(cfg)) == cfg  # round trip


@pytest.mark.parametrize("name", list_registry("models"))
def test_every_model_config_loads(name):
    cfg = load_model_config(name)
    assert cfg.edited_weights and cfg.blocks and cfg.lm_head


@pytest.mark.parametrize("name", list_registry("tasks"))
def test_every_task_config_loads(name):
    assert load_task(name).instructions


def test_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  batch_sise: 4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*batch_sise"):
        load_run_config(p)


def test_wrong_type_names_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  max_steps: lots\n")
    with pytest.raises(ConfigError, match=r"train.max_steps"):
        load_run_config(p)


def test_multi_task_mode_requires_no_instructions():
    with pytest.raises(ConfigError, match="multi-task"):
        load_run_config(None, {"mode": "multi-task", "data.instruction_setting": "seen"})


def test_unknown_model_and_task():
    with pytest.raises(ConfigError, match="unknown model"):
        load_run_config(None, {"model": "gpt-17"})
    with pytest.raises(ConfigError, match="unknown task"):
        load_run_config(None, {"data.tasks": ["nosuchtask"]})


def test_task_yaml_with_the_removed_loss_and_metrics_keys_is_refused(tmp_path, monkeypatch):
    # The loss is chosen per record by its data (sentiment records: unlikelihood), the metrics by
    # its probes; a task YAML that still names them is told so like any other unknown key.
    from instructedit import config

    (tmp_path / "tasks").mkdir()
    shipped = (config.CONFIG_DIR / "tasks" / "convsent.yaml").read_text()
    for extra, key in (("loss: unlikelihood\n", "loss"), ("metrics: [es, dd]\n", "metrics")):
        (tmp_path / "tasks" / "old.yaml").write_text(shipped + extra)
        monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
        with pytest.raises(ConfigError, match=rf"old.yaml: unknown key\(s\) \['{key}'\]"):
            load_task("old")
