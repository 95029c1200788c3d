"""Training that keeps improving: the lr schedule (warm-up, decay), the same lr on resume as in
the uninterrupted run, resuming a state written before the schedule and the MEND options, and
early stopping that fires after `patience` validations without a new best."""

import itertools
import math

import pytest
import torch
from instructedit.config import ConfigError, TrainConfig, load_run_config
from instructedit.editor.checkpoint import load_editor_checkpoint, read_best
from instructedit.train import loop
from instructedit.train.checkpoint import load_resume_state
from instructedit.train.loop import LoopHooks, train_editor
from instructedit.train.schedule import lr_factor
from test_learning import synthetic

torch.set_num_threads(1)


def test_lr_factor_shapes():
    tc = TrainConfig(max_steps=20, warmup_steps=4, lr_decay="cosine", min_lr_ratio=0.1)
    f = [lr_factor(s, tc) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and f[4] == 1.0
    assert all(a > b for a, b in itertools.pairwise(f[4:]))  # decays
    assert f[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 15 / 16)))
    lin = TrainConfig(max_steps=10, lr_decay="linear", min_lr_ratio=0.0)
    assert [lr_factor(s, lin) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert {lr_factor(s, TrainConfig(max_steps=10)) for s in range(10)} == {1.0}  # default: constant
    with pytest.raises(ConfigError, match="train.lr_decay"):
        TrainConfig(lr_decay="step")


def cfg(**over):
    return load_run_config(None, {
        "model": "tiny-llama", "mode": "multi-task", "data.instruction_setting": "none",
        "editor.rank": 16, "editor.lr": 1e-3, "editor.lr_lr": 1e-3, "editor.edit_lr": 1e-2,
        "train.batch_size": 4, "train.max_steps": 6, "train.val_every": 3, "train.log_every": 1,
        "train.val_size": 4, "train.early_stop_patience": 10, "train.max_length": 40,
        "train.hidden_cache_mb": 0, "train.warmup_steps": 2, "train.lr_decay": "cosine",
        "train.min_lr_ratio": 0.2, **over})


class Crash(RuntimeError):
    pass


def logged(into):
    return lambda step, m: into.update({step: (m["lr/hypernet"], m["lr/lr_lr"])})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from instructedit.models import build_model

    loaded = build_model("tiny-llama")
    train, val = synthetic(40, 11), synthetic(8, 12)
    tmp = tmp_path_factory.mktemp("sched")
    c = cfg()
    full: dict = {}
    a = train_editor(c, train, val, tmp / "a", loaded=loaded, verbose=False, hooks=LoopHooks(on_log=logged(full)))

    def crash(step):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        train_editor(c, train, val, tmp / "b", loaded=loaded, verbose=False, hooks=LoopHooks(fault=crash))
    return {"loaded": loaded, "train": train, "val": val, "tmp": tmp, "cfg": c, "full": full, "a": a}


def test_resumed_run_has_the_uninterrupted_run_s_lr(runs):
    c, full = runs["cfg"], runs["full"]
    assert full[1] == (pytest.approx(0.5e-3), pytest.approx(0.5e-3))  # warm-up on both groups
    assert full[3][0] == pytest.approx(1e-3) and full[6][0] < full[4][0] < 1e-3  # then cosine decay
    state = load_resume_state(runs["tmp"] / "b" / "step-000003")
    assert state["step"] == 3 and "editor_fields" in state
    resumed: dict = {}
    r = train_editor(c, runs["train"], runs["val"], runs["tmp"] / "b", loaded=runs["loaded"], resume=state,
                     verbose=False, hooks=LoopHooks(on_log=logged(resumed)))
    assert r.steps == 6 and sorted(resumed) == [4, 5, 6]
    assert all(resumed[s] == full[s] for s in (4, 5, 6)), (resumed, full)
    a_ed = load_editor_checkpoint(runs["tmp"] / "a" / "step-000006")["state_dict"]
    b_ed = load_editor_checkpoint(runs["tmp"] / "b" / "step-000006")["state_dict"]
    for k in a_ed:
        torch.testing.assert_close(b_ed[k], a_ed[k], rtol=1e-5, atol=1e-8)


def test_a_state_written_before_the_change_resumes_with_the_legacy_editor(runs):
    state = load_resume_state(runs["tmp"] / "b" / "step-000003")
    del state["editor_fields"]  # as state.pt files written before it carry nothing of it
    r = train_editor(runs["cfg"], runs["train"], runs["val"], runs["tmp"] / "c", loaded=runs["loaded"],
                     resume=state, verbose=False)
    assert r.steps == 6
    ec = load_editor_checkpoint(runs["tmp"] / "c" / "step-000006")["editor_config"]
    assert (ec["norm_eps_on"], ec["token_select"], ec["norm_eps"]) == ("var", "attention", 1e-5)
    fresh = load_editor_checkpoint(runs["tmp"] / "a" / "step-000006")["editor_config"]
    assert (fresh["norm_eps_on"], fresh["token_select"]) == ("std", "gradient")


def test_early_stopping_fires_after_patience_and_keeps_the_best(runs, monkeypatch):
    scores = iter([0.5, 0.4, 0.7, 0.6, 0.65, 0.9, 0.9])  # patience 2: stops at the 5th validation

    def scripted(editor, records, batch_size, max_length):
        return {"val/score": next(scores), "val/edit_success": 0.0}, []

    monkeypatch.setattr(loop, "validate", scripted)
    c = cfg(**{"train.max_steps": 40, "train.val_every": 2, "train.early_stop_patience": 2,
               "train.log_every": 100})
    out = runs["tmp"] / "stop"
    r = train_editor(c, runs["train"], runs["val"], out, loaded=runs["loaded"], verbose=False)
    assert r.stopped == "early_stop" and r.steps == 10 and len(r.history) == 5
    assert r.best_step == 6 and r.best_metrics["val/score"] == 0.7
    assert read_best(out)["step"] == 6 and r.checkpoint == out / "step-000006" / "editor.pt"
    assert load_resume_state(out / "step-000010")["bad_vals"] == 2
