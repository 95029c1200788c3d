"""`instructedit edit` end to end on tiny-llama with a quickly trained editor: the transcript, the
saved model (plain HF, reproduces the edited logits), JSONL requests, and each bad input (exit code
2, a message naming the problem, nothing saved)."""

import json
import random

import pytest
import torch
from instructedit.cli import main
from instructedit.data.record import EditRecord, Probe

WORDS = ["red", "blue", "gold", "jade", "iron", "salt", "wolf", "bear", "oak", "elm", "sun", "ash"]


def synthetic(n, seed):
    rng = random.Random(seed)
    return [EditRecord(task="counterfact", case_id=f"syn-{seed}-{i}",
                       prompt=f"The {rng.choice(['color', 'metal', 'beast'])} of {s} is", target_new=rng.choice(WORDS),
                       subject=s, locality=[Probe("neighborhood", f"The home of {s[::-1]}x is", [rng.choice(WORDS)])])
            for i, s in enumerate("".join(rng.choice("bcdfghklmnprstvz") for _ in range(3)) for _ in range(n))]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from instructedit.config import load_run_config
    from instructedit.train.loop import train_editor

    cfg = load_run_config(None, {
        "model": "tiny-llama", "mode": "multi-task", "data.instruction_setting": "none",
        "editor.rank": 64, "editor.lr": 1e-3, "editor.lr_lr": 1e-3, "editor.edit_lr": 1e-2,
        "editor.c_edit": 1.0, "editor.c_loc": 100.0,
        "train.batch_size": 8, "train.max_steps": 60, "train.val_every": 60, "train.log_every": 60,
        "train.val_size": 32, "train.max_length": 48,
    })
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_editor(cfg, synthetic(400, 1), synthetic(32, 2),
                              tmp_path_factory.mktemp("editor") / "ckpt", verbose=False)
    finally:
        torch.set_num_threads(threads)
    return result.checkpoint


def test_edit_compare_and_save(ckpt, tmp_path, capsys):
    from instructedit import EditRequest, load_editor
    from transformers import AutoModelForCausalLM

    out = tmp_path / "edited"
    rc = main(["edit", "--editor", str(ckpt), "--prompt", "The color of vbz is", "--target", "gold",
               "--task", "counterfact", "--rephrase", "The metal of vbz is", "--compare",
               "--locality", "The color of vbz is", "--max-new-tokens", "6", "--save", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    text = cap.out
    assert "=== edit 1/1: The color of vbz is -> 'gold'" in text
    edit_part = text.split("=== locality")[0]
    assert edit_part.count("\n    before: ") == 2 and edit_part.count("\n    after:  ") == 2  # prompt + rephrase
    assert text.count("P(target)") == 2 and text.count("next before:") == 2
    card = (out / "MODEL_CARD.md").read_text()
    assert "The color of vbz is" in card and "gold" in card
    # --compare checks unrelated prompts: the built-in facts, and the --locality one, which is the
    # edited prompt itself and so must come out CHANGED (the flag works), in the transcript and the card.
    assert "=== locality: 12 unrelated prompt(s) (built-in facts, command line);" in text
    assert "The capital of France is" in text and "[CHANGED] The color of vbz is" in text
    assert "## Unrelated prompts (locality check)" in card and "| CHANGED |" in card
    assert "editor: step 60, val/score " in cap.err  # a file is taken as given
    edits = json.loads((out / "edits.json").read_text())
    assert edits["edits"][0]["rephrases"] == ["The metal of vbz is"]
    prompt = next(p for p in edits["edits"][0]["probes"] if p["kind"] == "prompt")
    assert prompt["p_after"] > prompt["p_before"]

    # The saved model is a plain HF model that reproduces the edited logits.
    editor = load_editor(ckpt)
    ids = editor.tokenizer("The color of vbz is gold; the metal of vbz is", return_tensors="pt")
    with torch.no_grad(), editor.edit(EditRequest("The color of vbz is", "gold", task="counterfact",
                                                  rephrases=["The metal of vbz is"])):
        edited = editor.model(**ids).logits
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        got = reloaded(**ids).logits
    assert torch.allclose(got, edited, atol=1e-5, rtol=0), (got - edited).abs().max()


def test_requests_file(ckpt, tmp_path, capsys):
    reqs = tmp_path / "reqs.jsonl"
    reqs.write_text(json.dumps({"prompt": "The color of vbz is", "target": "gold"}) + "\n"
                    + json.dumps({"prompt": "The beast of kmt is", "target": "wolf",
                                  "rephrases": ["The color of kmt is"]}) + "\n")
    rc = main(["edit", "--editor", str(ckpt.parent.parent), "--requests", str(reqs), "--max-new-tokens", "4",
               "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rows = json.loads(cap.out)
    assert [r["target"] for r in rows] == ["gold", "wolf"]
    assert all(p["continuation_after"] is not None for r in rows for p in r["probes"])


@pytest.mark.parametrize("case", ["other_model", "empty_target", "unknown_task", "bad_jsonl", "missing_ckpt"])
def test_bad_input_exits_nonzero_and_saves_nothing(ckpt, tmp_path, capsys, case):
    out = tmp_path / "edited"
    base = ["edit", "--editor", str(ckpt), "--save", str(out)]
    fact = ["--prompt", "The color of vbz is", "--target", "gold"]
    if case == "other_model":
        argv, expect = base + fact + ["--model", "tiny-gpt2"], "tiny-llama"
    elif case == "empty_target":
        argv, expect = base + ["--prompt", "The color of vbz is", "--target", " "], "target is empty"
    elif case == "unknown_task":
        argv, expect = base + fact + ["--task", "nope"], "unknown task 'nope'"
    elif case == "bad_jsonl":
        reqs = tmp_path / "reqs.jsonl"
        reqs.write_text('{"prompt": "A is", "target": "b"}\n{"prompt": "C is" "target": "d"}\n')
        argv, expect = base + ["--requests", str(reqs)], f"{reqs}:2: not valid JSON"
    else:
        argv, expect = ["edit", "--editor", str(tmp_path / "none.pt"), "--save", str(out)] + fact, "not found"
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and expect in err, err
    assert "instructedit edit: error:" in err
    assert not out.exists() and list(tmp_path.iterdir()) in ([], [tmp_path / "reqs.jsonl"])


def test_edit_with_an_untrained_method_saves_a_card_that_names_it(tmp_path, capsys):
    """`edit --method ft-l --model tiny-llama`: no checkpoint, the same transcript and saved model,
    the card names FT-L and its hyperparameters (from configs/methods/ft-l.yaml)."""
    out = tmp_path / "edited"
    rc = main(["edit", "--method", "ft-l", "--model", "tiny-llama", "--prompt", "The color of vbz is",
               "--target", "gold", "--subject", "vbz", "--max-new-tokens", "4", "--save", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "FT-L (untrained, ft-l.yaml); base model tiny-llama; 1 request(s)" in cap.err
    assert "=== edit 1/1: The color of vbz is -> 'gold'" in cap.out and "edit input" not in cap.out
    card = (out / "MODEL_CARD.md").read_text()
    assert card.startswith("# tiny-llama edited with FT-L") and "- method: ft-l" in card
    edits = json.loads((out / "edits.json").read_text())
    assert edits["editor"]["method"] == "ft-l" and edits["editor"]["hyperparameters"]["steps"] > 0
    prompt = next(p for p in edits["edits"][0]["probes"] if p["kind"] == "prompt")
    assert prompt["p_after"] > prompt["p_before"]


def test_edit_method_refuses_a_trained_method_name(capsys):
    with pytest.raises(SystemExit) as e:  # argparse: not among the untrained choices
        main(["edit", "--method", "instructedit", "--prompt", "x", "--target", "y"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
