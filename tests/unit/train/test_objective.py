"""The meta-objective of one training step: the locality KL over every token of the locality
sequence (answer positions as an option), the edit loss on plain prompts and rephrases with
editor.rephrase_in_edit_loss, and edit learning rates that learn."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from instructedit.config import load_run_config
from instructedit.models import build_model
from instructedit.train.loop import build_editor, make_optimizer
from instructedit.train.step import make_step_batch, training_step
from test_learning import synthetic

torch.set_num_threads(1)


def run_cfg(**editor):
    over = {"model": "tiny-llama", "mode": "multi-task", "data.instruction_setting": "none",
            "editor.rank": 32, "editor.edit_lr": 0.5, "train.max_length": 48}
    over.update({f"editor.{k}": v for k, v in editor.items()})
    return load_run_config(None, over)


@pytest.fixture(scope="module")
def loaded():
    return build_model("tiny-llama")


def records(n=4, seed=5):
    out = []
    for r in synthetic(n, seed):
        out.append(dataclasses.replace(
            r, edit_input=f"Task: facts\nDescription: change it\nInput: {r.prompt}",
            rephrase_prompts=[f"Say it: {r.prompt}"]))
    return out


def kl_by_hand(editor, batch, positions):
    """KL(pre || post) of the full HF model with edit e dense-applied to locality row e, over
    the given positions of each row, mean per row, mean over rows."""
    loc = batch.loc
    per_row = []
    with torch.no_grad():
        pre = editor.model(input_ids=loc.input_ids, attention_mask=loc.attention_mask).logits
        edits, _ = editor.edit(batch.edit)
        for r in range(len(loc)):
            with editor.apply(edits, which=[int(loc.row_edit[r])]):
                post = editor.model(input_ids=loc.input_ids[r:r + 1], attention_mask=loc.attention_mask[r:r + 1]).logits[0]
            m = positions[r]
            kl = F.kl_div(torch.log_softmax(post[m], -1), torch.log_softmax(pre[r][m], -1),
                          log_target=True, reduction="none").sum(-1)
            per_row.append(kl.mean())
    return float(torch.stack(per_row).mean())


def test_locality_kl_is_over_every_token_or_the_answer_positions(loaded):
    recs = records()
    values = {}
    for which in ("all", "answer"):
        cfg = run_cfg(loc_positions=which)
        editor = build_editor(cfg, loaded).eval()  # eval: the statistics stay fixed between passes
        batch = make_step_batch(recs, editor.tokenizer, 48, seed=0)
        _, metrics = training_step(editor, batch, cfg.editor)
        mask = batch.loc.attention_mask.bool() if which == "all" else batch.loc.answer_mask
        assert metrics["loss/loc"] == pytest.approx(kl_by_hand(editor, batch, mask), rel=1e-3, abs=1e-7)
        values[which] = metrics["loss/loc"]
    assert values["all"] > 0 and values["all"] != pytest.approx(values["answer"], rel=1e-2)
    assert run_cfg().editor.loc_positions == "all"  # MEND's, the default


def test_rephrase_in_edit_loss_scores_the_plain_prompt_and_a_rephrase(loaded):
    recs = records()
    changed = [dataclasses.replace(r, rephrase_prompts=["Nothing like it at all, really"]) for r in recs]
    plain = [dataclasses.replace(r, prompt="Quite another question " + r.prompt) for r in recs]
    loss = {}
    for flag in (False, True):
        cfg = run_cfg(rephrase_in_edit_loss=flag)
        editor = build_editor(cfg, loaded).eval()
        for name, rs in (("base", recs), ("rephrase", changed), ("plain", plain)):
            batch = make_step_batch(rs, editor.tokenizer, 48, seed=0, outer=cfg.editor.rephrase_in_edit_loss)
            assert (batch.outer is not None) == flag
            _, m = training_step(editor, batch, cfg.editor)
            loss[flag, name] = m["loss/edit"]
        if flag:
            assert len(batch.outer) == 2 * len(recs)  # each edit: its plain prompt and one rephrase
            assert "loss/edit_outer" in m
    # Without the flag the edit loss reads the edit input only; with it, rephrase and plain prompt too.
    assert loss[False, "base"] == loss[False, "rephrase"] == loss[False, "plain"]
    assert loss[True, "base"] != pytest.approx(loss[True, "rephrase"], rel=1e-4)
    assert loss[True, "base"] != pytest.approx(loss[True, "plain"], rel=1e-4)
    assert loss[True, "base"] != pytest.approx(loss[False, "base"], rel=1e-4)


def test_outer_rows_skip_a_plain_prompt_equal_to_the_edit_input(loaded):
    recs = [dataclasses.replace(r, edit_input="") for r in records()]  # no instruction
    batch = make_step_batch(recs, loaded.tokenizer, 48, seed=0, outer=True)
    assert len(batch.outer) == len(recs) and all(m["kind"] == "outer" for m in batch.outer.meta)


def test_edit_learning_rates_receive_gradients_and_change(loaded):
    cfg = run_cfg()
    editor = build_editor(cfg, loaded).train()
    opt = make_optimizer(editor, cfg)
    before = editor.edit_lrs.detach().clone()
    loss, _ = training_step(editor, make_step_batch(records(), editor.tokenizer, 48, seed=0), cfg.editor)
    loss.backward()
    assert editor.edit_lrs.grad is not None and (editor.edit_lrs.grad != 0).all()
    opt.step()
    assert (editor.edit_lrs.detach() != before).all()


def test_shared_instruction_prefixes_give_the_same_step(loaded):
    """The instruction prefix of instructed edit rows runs through the frozen lower blocks once and
    is served from the shared-prefix cache after: the loss and every editor gradient are those of
    whole rows within float noise; the second step finds its prefixes cached. (A wrong prefix
    entry moves the loss at the 1e-2 level: tests/unit/editor/test_split_prefixes.py. The edit
    learning rates' gradients are small sums of cancelling terms, so their fp32 noise is a few %.)"""
    from instructedit.data.instructions import apply_template, task_config

    texts = ["Change the fact as asked.", "Update what the model believes."]
    recs = [dataclasses.replace(r, instruction=texts[i % 2], instruction_id=f"i{i % 2}",
                                edit_input=apply_template(task_config(r.task), texts[i % 2], r.prompt))
            for i, r in enumerate(synthetic(6, 11))]
    cfg = run_cfg()
    editor = build_editor(cfg, loaded).train()
    shared = make_step_batch(recs, editor.tokenizer, 160, seed=0)  # byte tokens: room for the template
    whole = make_step_batch(recs, editor.tokenizer, 160, seed=0, share_prefixes=False)
    assert whole.edit.prefixes is None and all(len(c) == 1 and c[0] > 3 for c in shared.edit.prefixes)

    def step(batch):
        editor.zero_grad(set_to_none=True)
        loss, _ = training_step(editor, batch, cfg.editor)
        loss.backward()
        return float(loss), {n: p.grad.clone() for n, p in editor.named_parameters() if p.grad is not None}

    editor.split.clear_shared()
    loss_w, grads_w = step(whole)
    loss_s, grads_s = step(shared)
    assert len(editor.split._shared) == 2  # one entry per distinct instruction
    loss_again, _ = step(shared)  # from the cache
    assert loss_s == pytest.approx(loss_w, rel=1e-5) and loss_again == pytest.approx(loss_w, rel=1e-5)
    assert grads_s.keys() == grads_w.keys() and grads_w
    for n, g in grads_w.items():
        tol = 0.1 if n == "edit_lrs" else 1e-2
        assert float((grads_s[n] - g).norm()) <= tol * float(g.norm()), n
