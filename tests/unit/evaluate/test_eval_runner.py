"""The runner: batched = one at a time, resume = uninterrupted, both ZsRE formats, ConvSent ES/DD,
unseen instructions, sequential mode, the comparison table."""

import json
from typing import ClassVar

import pandas as pd
import pytest
import torch
from eval_records import make_convsent, make_records
from instructedit.config import CONFIG_DIR, load_task
from instructedit.data.batches import probe_batch
from instructedit.data.instructions import retag
from instructedit.data.readers import read_source
from instructedit.evaluate import runner
from instructedit.evaluate.core import (
    BatchedForward,
    EvalOptions,
    evaluate_batch,
    mend_edits,
    no_edits,
    score,
)
from instructedit.evaluate.reference import reference_evaluate
from instructedit.evaluate.sequential import evaluate_sequential
from instructedit.models import weight_fingerprint

ML = 48


def _same(a: dict, b: dict, abs_tol=1e-4):
    assert set(a) == set(b), (sorted(a), sorted(b))
    for k, v in b.items():
        if isinstance(v, float):
            assert a[k] == pytest.approx(v, abs=abs_tol), k
        else:
            assert a[k] == v, k


def test_batched_equals_one_at_a_time(tiny_editor, records):
    make = mend_edits(tiny_editor)
    tagged = retag(records, "seen")  # instructed probe variants are scored too
    batched = evaluate_batch(tiny_editor, tagged, make, ML)
    assert any(r.get("reliability", 0) > 0 for r in batched) or any(r.get("dd", 0) > 0 for r in batched)
    for got, rec in zip(batched, tagged):
        # one record alone through the batched path, and the slow reference (dense apply, full forwards)
        _same(got, evaluate_batch(tiny_editor, [rec], make, ML)[0], 1e-5)
        _same(got, reference_evaluate(tiny_editor, rec, make, ML))
    headline = {"reliability", "generalization", "locality", "portability", "portability/reasoning",
                "reliability_gen", "generalization_gen", "locality_gen"}
    assert headline | {m + "_instructed" for m in ("reliability", "generalization", "portability")} <= set(batched[0])
    assert {"es", "es_instructed", "dd"} <= set(batched[-1]) and "reliability" not in batched[-1]


def test_shared_prefixes_equal_whole_rows_and_the_reference(tiny_editor, records):
    """Instructions, ConvSent topic questions and the prompts generated from run their lower blocks
    once (editor/split.py); the metrics are those of every row run whole, and of the reference."""
    from instructedit.data.batches import edit_batch, mark_prefixes

    make = mend_edits(tiny_editor)
    tagged = retag(records, "seen")
    ml = 256  # the tiny byte-level tokenizer: room for the ~150-token instruction prefix (48 cuts it off)
    tok = tiny_editor.tokenizer
    assert all(mark_prefixes(edit_batch(tagged, tok, ml), tok, tagged, instructed=True, prompts=False).prefixes)
    sp = tiny_editor.split
    sp.clear_shared()
    hits = sp.shared_hits
    shared = evaluate_batch(tiny_editor, tagged, make, ml)
    assert sp.shared_hits > hits and sp._shared
    whole = evaluate_batch(tiny_editor, tagged, make, ml, share_prefixes=False)
    for a, b in zip(shared, whole):
        _same(a, b, 1e-5)
    for got, rec in zip(shared[:2] + shared[-1:], tagged[:2] + tagged[-1:]):
        _same(got, reference_evaluate(tiny_editor, rec, make, ml))
    sp.clear_shared()


def _instruction_free(text: str, records) -> bool:
    return not any(r.instruction and r.instruction in text for r in records) and "Task:" not in text


def test_baseline_probes_and_edit_input_carry_no_instruction(tiny_editor, records):
    """A method trained without instructions edits from the plain prompt, and every headline probe
    of every method is plain: only *_instructed metrics see the instruction."""
    tagged = retag(records, "seen")
    tok = tiny_editor.tokenizer
    seen_edit = []

    def spy_edits(batch, hidden):
        seen_edit.extend(tok.decode(row[m.bool()]) for row, m in zip(batch.input_ids, batch.attention_mask))
        return mend_edits(tiny_editor)(batch, hidden)

    class Spy(BatchedForward):
        texts: ClassVar[list[str]] = []

        def logits(self, batch, post):
            self.texts.extend(tok.decode(row[m.bool()]) for row, m in zip(batch.input_ids, batch.attention_mask))
            return super().logits(batch, post)

    opts = EvalOptions(instructed_edit=False, instructed_probes=False, generation=False)
    from instructedit.data.batches import edit_batch

    eb = edit_batch(tagged, tok, ML, instructed=opts.instructed_edit)
    edits = spy_edits(eb, tiny_editor.lower(eb))
    spy = Spy(tiny_editor, edits)
    rows = score(tagged, tok, spy, ML, opts)
    assert seen_edit and all(_instruction_free(t, tagged) for t in seen_edit)
    assert spy.texts and all(_instruction_free(t, tagged) for t in spy.texts)
    assert not any(k.endswith("_instructed") for r in rows for k in r)
    # an instruction-trained method's edit input does carry it
    ie = edit_batch(tagged, tok, 512, instructed=True)  # long enough that the template is not cut
    assert all("Task:" in tok.decode(row[m.bool()]) for row, m in zip(ie.input_ids, ie.attention_mask))


class _LeansOnInstruction(BatchedForward):
    """An 'edit' that holds only when the prompt carries the instruction: the target is the
    argmax on instructed rows and never on plain ones."""

    def __init__(self, editor):
        super().__init__(editor, None)

    def logits(self, batch, post):
        tok = self.editor.tokenizer
        vocab = self.editor.model.config.vocab_size
        rows = batch.answer_mask.nonzero(as_tuple=True)[0]
        ids = batch.answer_ids[batch.answer_mask]
        instructed = torch.tensor(["Task:" in tok.decode(batch.input_ids[r]) for r in range(len(batch))])
        want = torch.where(instructed[rows] & torch.tensor(post), ids, (ids + 1) % vocab)
        return torch.nn.functional.one_hot(want, vocab).float() * 10


def test_same_edit_scored_on_plain_and_instructed_probes(tiny_editor, records):
    tagged = retag([r for r in records if r.sentiment is None], "seen")
    rows = score(tagged, tiny_editor.tokenizer, _LeansOnInstruction(tiny_editor), 512,  # templates uncut
                 EvalOptions(generation=False))
    for r in rows:
        assert r["reliability"] == 0.0 and r["reliability_instructed"] == 1.0
        assert r["generalization"] == 0.0 and r["generalization_instructed"] == 1.0
        assert r["portability"] == 0.0 and r["portability_instructed"] == 1.0
        assert r["locality"] == 1.0  # locality probes are never instructed, so pre == post here
    untagged = score([r for r in records if r.sentiment is None], tiny_editor.tokenizer,
                     _LeansOnInstruction(tiny_editor), ML, EvalOptions(generation=False))
    assert not any(k.endswith("_instructed") for r in untagged for k in r)  # no instruction, no column


def test_resume_after_interruption_equals_uninterrupted(tiny_editor, records, tmp_path):
    make = mend_edits(tiny_editor)
    kw = {"editor": tiny_editor, "make_edits": make, "setting": "seen", "batch_size": 3, "max_length": ML, "progress": False}
    full = runner.run_evaluation(records, tmp_path / "full", **kw)

    def crash(i, rows):
        if i == 1:
            raise KeyboardInterrupt  # killed after the second batch was written

    with pytest.raises(KeyboardInterrupt):
        runner.run_evaluation(records, tmp_path / "cut", on_batch=crash, **kw)
    assert len(list((tmp_path / "cut" / "parts").glob("*.parquet"))) == 2
    resumed = runner.run_evaluation(records, tmp_path / "cut", **kw)
    assert resumed.n_new == len(records) - 6
    assert (resumed.cases["edit_seconds"] > 0).all()  # timings differ between runs; the rest may not
    pd.testing.assert_frame_equal(resumed.cases.drop(columns="edit_seconds"), full.cases.drop(columns="edit_seconds"))
    assert resumed.metrics == pytest.approx(full.metrics)
    again = runner.run_evaluation(records, tmp_path / "cut", **kw)  # nothing left to do, nothing duplicated
    assert again.n_new == 0 and len(again.cases) == len(records)
    assert set(full.cases["instruction_setting"]) == {"seen"} and full.cases["case_id"].is_unique
    assert (tmp_path / "full" / "summary.csv").exists()
    with pytest.raises(runner.ResumeMismatch):
        runner.run_evaluation(records, tmp_path / "cut", **{**kw, "setting": "unseen"})


def _zsre_files(tmp_path, shared_data):
    src = shared_data / "mend-format" / "zsre_mend_train-1k.json"
    raws = [r for r in json.loads(src.read_text()) if r["alt"].strip()][:4]
    knowedit = [{"subject": r["subject"], "prompt": r["src"], "target_new": r["alt"], "ground_truth": r["answers"],
                 "rephrase_prompt": r["rephrase"],
                 "locality": {"Relation_Specificity": [{"prompt": r["loc"], "ground_truth": r["loc_ans"]}]},
                 "portability": {"Reasoning": [{"prompt": r["src"] + " Indeed,", "ground_truth": [r["alt"]]}]}}
                for r in raws]
    (tmp_path / "mend.json").write_text(json.dumps(raws))
    (tmp_path / "knowedit.json").write_text(json.dumps(knowedit))
    return tmp_path / "mend.json", tmp_path / "knowedit.json"


def test_hold_out_zsre_in_both_formats(tiny_editor, tmp_path, shared_data):
    mend_path, ke_path = _zsre_files(tmp_path, shared_data)
    mend = [r for _, r in read_source(mend_path, "zsre_mend", "zsre")[0]]
    ke = [r for _, r in read_source(ke_path, "knowedit", "zsre")[0]]
    out = {}
    for name, recs in (("mend", mend), ("knowedit", ke)):
        res = runner.run_evaluation(recs, tmp_path / name, editor=tiny_editor, make_edits=no_edits, setting="seen",
                                    batch_size=4, max_length=ML, progress=False)
        assert set(res.cases["task"]) == {"zsre"} and len(res.cases) == 4
        assert res.cases["instruction_id"].str.startswith("zsre-").all()
        out[name] = res.cases
    for m in ("reliability", "generalization", "locality"):  # same prompts -> same numbers
        assert out["mend"][m].tolist() == pytest.approx(out["knowedit"][m].tolist()), m
    assert "portability" in out["knowedit"] and out["knowedit"]["portability"].notna().all()


def test_convsent_es_dd(tiny_editor):
    from instructedit.data.batches import probe_batch
    from instructedit.editor import losses

    recs = make_convsent(4, 5)
    pre = evaluate_batch(tiny_editor, recs, no_edits, ML)
    for row, r in zip(pre, recs):
        assert row["dd"] == 0.0  # no edit: KL(pre || post) is zero
        sb = probe_batch([r], tiny_editor.tokenizer, "sentiment", ML)
        assert r.target_new not in [m_text for m_text in (tiny_editor.tokenizer.decode(sb.answer_ids[i][sb.answer_mask[i]])
                                                          for i in range(len(sb)))]
        with torch.no_grad():
            lg = tiny_editor.model(input_ids=sb.input_ids, attention_mask=sb.attention_mask).logits
        lp = losses.token_logprobs(lg[sb.answer_mask], sb.answer_ids[sb.answer_mask])
        good = torch.tensor([m["good"] for m in sb.meta])[losses.answer_rows(sb.answer_mask)]
        # no edit: z_topic = 1 and ES = sigmoid(mean logp good - mean logp bad)
        assert row["es"] == pytest.approx(float(torch.sigmoid(lp[good].mean() - lp[~good].mean())), abs=1e-5)
    post = evaluate_batch(tiny_editor, recs, mend_edits(tiny_editor), ML)
    assert all(r["dd"] > 0 for r in post) and all(0.0 <= r["es"] <= 1.0 for r in post)


def test_unseen_instructions_never_in_training_pool():
    from instructedit.config import DataConfig
    from instructedit.data.pipeline import tag_and_split

    for path in sorted((CONFIG_DIR / "tasks").glob("*.yaml")):
        task = load_task(path.stem)
        unseen = {i.id for i in task.unseen_pool}
        assert unseen, f"{task.name} keeps no instruction out of training"
        seen_texts = {i.text for i in task.seen_pool}
        assert not seen_texts & {i.text for i in task.unseen_pool}
        recs = make_records(12, 3, task=task.name)
        train = [tag_and_split(r, task, "train", DataConfig(instruction_setting="seen")) for r in recs]
        assert not {r.instruction_id for r in train} & unseen
        test = retag(recs, "unseen")
        assert {r.instruction_id for r in test} <= unseen
        assert all(r.instruction and r.edit_input != r.prompt for r in test)


def test_sequential_rows_and_restore(tiny_editor):
    recs = make_records(4, 9)
    before = weight_fingerprint(tiny_editor.model, tiny_editor.names)
    rows = evaluate_sequential(tiny_editor, recs, mend_edits(tiny_editor), None, ML, progress=False)
    assert [r["k"] for r in rows] == [1, 2, 4]
    assert all(0.0 <= r["reliability"] <= 1.0 and 0.0 <= r["locality"] <= 1.0 for r in rows)
    assert weight_fingerprint(tiny_editor.model, tiny_editor.names) == before
    # K=1 on a fresh model: the first edit's reliability is the independent one
    ind = evaluate_batch(tiny_editor, recs[:1], mend_edits(tiny_editor), ML)[0]["reliability"]
    assert rows[0]["reliability"] == pytest.approx(ind)


def test_length_chunks_change_nothing(tiny_editor, records):
    """Rows sorted into small chunks of similar length (less padding) give the same numbers."""
    from instructedit.data.batches import edit_batch

    tagged = runner.retag(records, "seen")
    tok = tiny_editor.tokenizer
    eb = edit_batch(tagged, tok, ML)
    edits = mend_edits(tiny_editor)(eb, tiny_editor.lower(eb))
    whole = score(tagged, tok, BatchedForward(tiny_editor, edits), ML, EvalOptions(generation=False))
    small = BatchedForward(tiny_editor, edits, max_tokens=3 * ML)
    chunked = score(tagged, tok, small, ML, EvalOptions(generation=False))
    for a, b in zip(chunked, whole):
        _same(a, b, 1e-5)
    sb = probe_batch(tagged, tok, "sentiment", ML)
    assert len(small._chunks(sb)[0]) > 2  # really split


def test_pre_edit_batched_equals_reference(tiny_editor, records):
    """Without edits the batched path reuses pre-edit outputs as post-edit ones: still exact."""
    tagged = runner.retag(records, "seen")
    batched = evaluate_batch(tiny_editor, tagged, no_edits, ML)
    for got, rec in zip(batched, tagged):
        _same(got, reference_evaluate(tiny_editor, rec, no_edits, ML))
    assert all(r.get("locality", 1.0) == 1.0 and r.get("locality_gen", 1.0) == 1.0 for r in batched)
    assert all(r["dd"] == 0.0 for r in batched if "dd" in r)
