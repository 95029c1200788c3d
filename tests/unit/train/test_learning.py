"""The editor learns: on a tiny model and synthetic facts, edits of held-out facts succeed after a
short training, far above the unedited model and the untrained (identity) editor, while locality
stays high."""

import random

import pytest
from instructedit.config import load_run_config
from instructedit.data.record import EditRecord, Probe
from instructedit.evaluate.core import evaluate_batch, mend_edits, no_edits
from instructedit.train.loop import build_editor, summarize, train_editor

WORDS = ["red", "blue", "gold", "jade", "iron", "salt", "wolf", "bear", "oak", "elm", "sun", "ash"]


def synthetic(n, seed, task="counterfact"):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        subj = "".join(rng.choice("bcdfghklmnprstvz") for _ in range(3))
        out.append(EditRecord(
            task=task, case_id=f"syn-{seed}-{i}", prompt=f"The {rng.choice(['color','metal','beast'])} of {subj} is",
            target_new=rng.choice(WORDS), subject=subj,
            locality=[Probe("neighborhood", f"The home of {subj[::-1]}x is", [rng.choice(WORDS)])],
        ))
    return out


@pytest.mark.timeout(300)
def test_editor_learns_on_tiny_model(tmp_path):
    cfg = load_run_config(None, {
        "model": "tiny-llama", "mode": "multi-task", "data.instruction_setting": "none",
        "editor.rank": 64, "editor.lr": 1e-3, "editor.lr_lr": 1e-3, "editor.edit_lr": 1e-2,
        # The locality KL averages over every token of the locality sequence (MEND), not only its
        # answer positions, which the locality metric reads: c_loc 100 kept 0.67 here, 1000 keeps 0.81.
        "editor.c_edit": 1.0, "editor.c_loc": 1000.0,
        "train.batch_size": 8, "train.max_steps": 300, "train.val_every": 50, "train.log_every": 50,
        "train.val_size": 32, "train.early_stop_patience": 10, "train.max_length": 48,
    })
    train, val, test = synthetic(400, 1), synthetic(32, 2), synthetic(32, 3)
    result = train_editor(cfg, train, val, tmp_path / "ckpt", verbose=False)
    assert result.checkpoint is not None and result.checkpoint.exists()
    from instructedit.editor.mend import MendEditor

    editor = MendEditor.from_checkpoint(result.checkpoint).eval()
    post = summarize(evaluate_batch(editor, test, mend_edits(editor), 48), "test")
    pre = summarize(evaluate_batch(editor, test, no_edits, 48), "test")
    assert post["test/reliability"] >= pre["test/reliability"] + 0.5, (pre, post)
    # The untrained editor: identity transform, initial edit lr, no statistics (a plain gradient step).
    fresh = build_editor(cfg, editor.loaded).eval()
    untrained = summarize(evaluate_batch(fresh, test, mend_edits(fresh), 48), "test")
    assert post["test/reliability"] >= untrained["test/reliability"] + 0.3, (untrained, post)
    assert post["test/locality"] >= 0.7, post
