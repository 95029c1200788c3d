from instructedit.provenance import budget, command_line, model_source


def test_command_line_as_typed():
    assert command_line(["/venv/bin/instructedit", "train", "--config", "demo"]) == "instructedit train --config demo"
    assert command_line(["/repo/platform/instructedit/demo.py", "--workdir", "a b"]) == \
        "python -m instructedit.demo --workdir 'a b'"
    assert command_line(["/repo/platform/instructedit/__main__.py", "report"]) == "python -m instructedit report"


def test_model_source_names_the_file_and_the_yaml():
    assert model_source("tiny-llama") == "random weights, seed 0 (configs/models/tiny-llama.yaml)"
    src = model_source("smollm2-135m")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in src and src.endswith("(configs/models/smollm2-135m.yaml)")
    assert model_source("gpt2-xl").startswith("hf:")
    assert model_source("/some/local/model") == "/some/local/model"


def test_budget_is_steps_times_batch():
    assert budget(40, 8) == 320 and budget(None, 8) is None


def test_run_tag_keys_name_the_tags_a_training_run_carries():
    from instructedit.config import load_run_config
    from instructedit.provenance import RUN_TAG_KEYS
    from instructedit.train.run import run_tags

    assert tuple(run_tags(load_run_config("tiny-test"), "hash")) == RUN_TAG_KEYS
