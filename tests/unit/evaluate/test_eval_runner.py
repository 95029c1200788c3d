"""The runner: batched = one at a time, resume = uninterrupted, both ZsRE formats, ConvSent ES/DD,
unseen instructions, sequential mode, the comparison table."""

import json

import pandas as pd
import pytest
import torch
from eval_records import make_convsent, make_records
from instructedit.config import CONFIG_DIR, load_task
from instructedit.data.readers import read_source
from instructedit.evaluate import runner
from instructedit.evaluate.core import evaluate_batch, mend_edits, no_edits
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
    batched = evaluate_batch(tiny_editor, records, make, ML)
    assert any(r.get("reliability", 0) > 0 for r in batched) or any(r.get("dd", 0) > 0 for r in batched)
    for got, rec in zip(batched, records):
        # one record alone through the batched path, and the slow reference (dense apply, full forwards)
        _same(got, evaluate_batch(tiny_editor, [rec], make, ML)[0], 1e-5)
        _same(got, runner.reference_evaluate(tiny_editor, rec, make, ML))
    assert {"reliability", "generalization", "locality", "portability", "portability/reasoning"} <= set(batched[0])
    assert {"es", "dd"} <= set(batched[-1]) and "reliability" not in batched[-1]


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
    pd.testing.assert_frame_equal(resumed.cases, full.cases)
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
    recs = make_convsent(4, 5)
    pre = evaluate_batch(tiny_editor, recs, no_edits, ML)
    for row, r in zip(pre, recs):
        assert row["dd"] == 0.0  # no edit: KL(pre || post) is zero
        from instructedit.data.batches import probe_batch
        from instructedit.editor import losses

        sb = probe_batch([r], tiny_editor.tokenizer, "sentiment", ML)
        with torch.no_grad():
            lp = tiny_editor.model(input_ids=sb.input_ids, attention_mask=sb.attention_mask).logits
        lp = losses.per_row_mean(losses.token_logprobs(lp[sb.answer_mask], sb.answer_ids[sb.answer_mask]),
                                 losses.answer_rows(sb.answer_mask), len(sb))
        good = torch.tensor([m["good"] for m in sb.meta])
        assert row["es"] == float(lp[good].mean() > lp[~good].mean())
    post = evaluate_batch(tiny_editor, recs, mend_edits(tiny_editor), ML)
    assert all(r["dd"] > 0 for r in post) and all(r["es"] in (0.0, 1.0) for r in post)


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
        test = runner.retag(recs, "unseen")
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


def test_compare_table_from_eval_dirs(tmp_path):
    from instructedit.evaluate.tables import compare_table, write_table

    for name, method, rel in (("pre", "Pre-edit", 0.1), ("ie", "InstructEdit", 0.9), ("mt", "MEND (multi-task)", 0.5)):
        d = tmp_path / name
        d.mkdir()
        m = {"test/counterfact/reliability": rel, "test/zsre/reliability": rel / 2, "test/convsent/dd": 0.1,
             "test/avg/reliability": rel}
        runner.write_summary(m, d / "summary.csv")
        (d / "run.json").write_text(json.dumps({"run_id": "", "tags": {"method": method}}))
    table = compare_table(tmp_path)
    assert list(table.values.index) == ["Pre-edit", "MEND (multi-task)", "InstructEdit"]
    assert [t for t, _ in table.values.columns][-1] == "zsre"  # hold-out last
    assert table.values.loc["InstructEdit", ("counterfact", "reliability")] == 0.9
    paths = write_table(table, tmp_path / "out")
    assert "**90.00**" in paths["md"].read_text() and paths["csv"].exists()
