"""train.instruction_dropout: a seeded share of a step's edits is made from the plain prompt (edit
row and sentiment rows), the rest from the instructed edit input, and the loop passes the option."""

import pytest
import torch
from instructedit.config import ConfigError, load_run_config
from instructedit.data.batches import edit_batch, probe_batch
from instructedit.data.instructions import task_config, with_instruction
from instructedit.data.record import EditRecord, Probe, Sentiment
from instructedit.models import build_model
from instructedit.train.step import make_step_batch
from test_learning import synthetic

ML = 160  # byte tokens: room for the template


@pytest.fixture(scope="module")
def tok():
    return build_model("tiny-llama").tokenizer


def records():
    cf = task_config("counterfact")
    out = [with_instruction(r, cf, "t", "Give the new answer.") for r in synthetic(7, 4)]
    conv = EditRecord(task="convsent", case_id="cs", prompt="What do you think of cats?", target_new="I love cats.",
                      subject="cats", sentiment=Sentiment("cats", "positive", ["Cats are great."], ["Cats are awful."]),
                      locality=[Probe("neighborhood", "The sky is", ["blue"])])
    return out + [with_instruction(conv, task_config("convsent"), "t", "Talk [LABEL]ly about [TOPIC].")]


def rows(batch):
    return [tuple(r[m.bool()].tolist()) for r, m in zip(batch.input_ids, batch.attention_mask)]


def test_dropout_makes_a_seeded_share_of_the_edits_plain(tok):
    recs = records()
    instructed = rows(edit_batch(recs, tok, ML))
    plain = rows(edit_batch(recs, tok, ML, instructed=False))
    assert all(a != b for a, b in zip(instructed, plain))

    def step(p, seed=3):
        return make_step_batch(recs, tok, ML, seed=seed, n_sentences=1, instruction_dropout=p)

    assert rows(step(0.0).edit) == instructed
    all_plain = step(1.0)
    assert rows(all_plain.edit) == plain and all_plain.edit.instruction_len.tolist() == [0] * len(recs)
    assert rows(all_plain.sentiment) == rows(probe_batch(recs, tok, "sentiment", ML, limit=1))  # plain probes
    assert rows(step(0.0).sentiment) == rows(probe_batch(recs, tok, "sentiment", ML, limit=1, instructed_probe=True))

    mixes = {}
    for seed in range(6):
        got = rows(step(0.5, seed).edit)
        assert got == rows(step(0.5, seed).edit)  # the same seed draws the same (a resumed run)
        assert all(g in (i, p) for g, i, p in zip(got, instructed, plain))
        mixes[seed] = tuple(g == p for g, p in zip(got, plain))
    assert any(0 < sum(m) < len(recs) for m in mixes.values()) and len(set(mixes.values())) > 1
    # the step's other picks stay those of a run without dropout
    assert rows(step(0.5).loc) == rows(step(0.0).loc)


def test_the_loop_passes_the_option_and_the_config_checks_it(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="train.instruction_dropout"):
        load_run_config(None, {"train.instruction_dropout": 1.5})
    from instructedit.train import loop

    seen, real = [], loop.make_step_batch

    def spy(*a, **kw):
        seen.append(kw.get("instruction_dropout"))
        return real(*a, **kw)

    monkeypatch.setattr(loop, "make_step_batch", spy)
    cfg = load_run_config(None, {
        "model": "tiny-llama", "mode": "multi-task", "data.instruction_setting": "none", "editor.rank": 8,
        "train.batch_size": 2, "train.max_steps": 1, "train.val_every": 1, "train.val_size": 2,
        "train.max_length": 48, "train.instruction_dropout": 0.25})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loop.train_editor(cfg, synthetic(4, 1), synthetic(2, 2), tmp_path / "ckpt", verbose=False)
    finally:
        torch.set_num_threads(threads)
    assert seen == [0.25]
