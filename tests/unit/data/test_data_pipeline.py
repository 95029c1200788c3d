"""The in-process pipeline functions: splits, borrowing, balancing, capping, load_records."""

import json

import pytest
from instructedit.config import (
    ConfigError,
    SourceConfig,
    apply_overrides,
    load_run_config,
    load_task,
    replace,
)
from instructedit.data.corpora import CorpusNotFoundError, resolve_data_dir
from instructedit.data.pipeline import (
    assign_split,
    balance,
    borrow_locality,
    build_task,
    cap,
    load_records,
)
from instructedit.data.record import EditRecord, Probe


def _cf(i, loc=True):
    return {"subject": f"S{i}", "prompt": f"The capital of S{i} is", "target_new": f"T{i}", "ground_truth": f"G{i}",
            "locality": {"Relation_Specificity": [{"prompt": f"The founder of S{i} is", "ground_truth": f"F{i}"}]}
            if loc else {}, "portability": {}}


def _task(tmp_path, records, name="recent", **changes):
    (tmp_path / "c.json").write_text(json.dumps(records))
    t = load_task(name)
    return replace(t, sources=(SourceConfig("c.json", "knowedit", "all"),), **changes)


def _all(res):
    return {r.case_id: r for recs in res.splits.values() for r in recs}


def test_split_fractions_and_roles():
    ids = [f"t/f/{i}" for i in range(5000)]
    splits = [assign_split(c, "all", (0.8, 0.1, 0.1)) for c in ids]
    assert abs(splits.count("train") / 5000 - 0.8) < 0.03 and abs(splits.count("test") / 5000 - 0.1) < 0.02
    assert {assign_split(c, "val", (0.8, 0.1, 0.1)) for c in ids} == {"val"}
    with pytest.raises(ConfigError):
        assign_split("x", "dev", (0.8, 0.1, 0.1))


def test_splits_and_tags_stable_when_records_are_added(tmp_path):
    cfg = load_run_config(None).data
    small = build_task(_task(tmp_path, [_cf(i) for i in range(300)]), tmp_path, cfg)
    grown = build_task(_task(tmp_path, [_cf(i) for i in range(-100, 400)]), tmp_path, cfg)
    a, b = _all(small), _all(grown)
    assert len(a) == 300 and len(b) == 500 and set(a) <= set(b)
    for cid, r in a.items():
        assert (r.split, r.instruction_id, r.edit_input) == (b[cid].split, b[cid].instruction_id, b[cid].edit_input)


def test_build_task_deterministic_and_seed_changes_only_tags(tmp_path):
    task = _task(tmp_path, [_cf(i) for i in range(200)])
    cfg = load_run_config(None).data
    one, two = build_task(task, tmp_path, cfg), build_task(task, tmp_path, cfg)
    assert one.splits == two.splits
    other = build_task(task, tmp_path, replace(cfg, seed=1))
    assert {c: r.split for c, r in _all(one).items()} == {c: r.split for c, r in _all(other).items()}
    assert any(r.instruction_id != _all(other)[c].instruction_id for c, r in _all(one).items())


def test_borrowed_locality_from_same_task_and_split(tmp_path):
    task = _task(tmp_path, [_cf(i, loc=i % 3 != 0) for i in range(300)])
    res = build_task(task, tmp_path, load_run_config(None).data)
    for recs in res.splits.values():
        own = {p.prompt for r in recs for p in r.locality if p.kind != "borrowed"}
        for r in recs:
            assert r.locality
            if r.locality[0].kind == "borrowed":
                assert r.locality[0].prompt in own and f"{r.subject} " not in r.locality[0].prompt


def test_borrow_locality_pure():
    recs = [EditRecord("t", f"c{i}", "p", "t", locality=[Probe("x", f"q{i}", ["a"])] if i else []) for i in range(5)]
    out = borrow_locality(recs, 0)
    assert out[0].locality[0].kind == "borrowed" and recs[0].locality == []
    assert out[1:] == recs[1:] and borrow_locality(recs, 0) == out


def test_balance_and_cap():
    recs = [EditRecord("t", f"c{i}", "p", "t") for i in range(100)]
    kept, dropped = balance(recs, 30, seed=0)
    assert len(kept) == 30 and len(dropped) == 70
    assert not {r.case_id for r in kept} & {r.case_id for r in dropped}
    assert [r.case_id for r in kept] == [r.case_id for r in recs if r in kept]  # input order kept
    assert balance(recs, 30, 0) == (kept, dropped) and balance(recs, 30, 1)[0] != kept
    assert balance(recs, 200, 0) == (recs, []) and balance(recs, None, 0) == (recs, [])
    # growing the input keeps most of the chosen records (rank by hash, not by position)
    grown = recs + [EditRecord("t", f"n{i}", "p", "t") for i in range(10)]
    assert len({r.case_id for r in balance(grown, 30, 0)[0]} & {r.case_id for r in kept}) >= 25
    kept, dropped = cap(recs, 10)
    assert len(kept) == 10 and len(dropped) == 90 and cap(recs, 10)[0] == kept


def test_balance_to_applies_to_train_and_is_recorded(tmp_path):
    task = _task(tmp_path, [_cf(i) for i in range(400)], balance_to=100)
    res = build_task(task, tmp_path, load_run_config(None).data)
    n_train = sum(1 for d in res.dropped if d["split"] == "train")
    assert len(res.splits["train"]) == 100 and n_train + 100 > 250
    assert all(d["reason"] == "balance_to=100" for d in res.dropped)
    assert sum(len(v) for v in res.splits.values()) + len(res.dropped) == 400


def test_convsent_balance_on_real_data(shared_data):
    data = load_run_config(None).data
    res = build_task(replace(load_task("convsent"), balance_to=500), shared_data, data)
    assert len(res.splits["train"]) == 500
    assert sum(len(v) for v in res.splits.values()) + len(res.dropped) == 1599
    full = build_task(load_task("convsent"), shared_data, data)  # 1427 > the train split: nothing dropped
    assert full.dropped == [] and sum(len(v) for v in full.splits.values()) == 1599


def test_max_records(tmp_path):
    task = _task(tmp_path, [_cf(i) for i in range(300)])
    res = build_task(task, tmp_path, replace(load_run_config(None).data, max_records=7))
    assert all(len(v) <= 7 for v in res.splits.values())
    assert sum(len(v) for v in res.splits.values()) + len(res.dropped) == 300


def test_load_records_in_process(shared_data, monkeypatch):
    monkeypatch.setenv("INSTRUCTEDIT_DATA", str(shared_data))
    cfg = load_run_config(None, {"data.tasks": ["counterfact"], "data.hold_out": ["zsre"], "data.on_error": "skip"})
    train = load_records(cfg, "train")
    assert {r.task for r in train} == {"counterfact", "zsre"} and all(r.split == "train" for r in train)
    assert all(r.locality for r in train) and all(r.instruction_id for r in train)
    assert load_records(cfg, "train") == train
    test = load_records(cfg, "test", tasks=["recent"])
    assert {r.task for r in test} == {"recent"}
    none = load_records(apply_overrides(cfg, {"data.instruction_setting": "none"}), "train", ["counterfact"])
    assert all(r.edit_input == r.prompt for r in none)
    with pytest.raises(ConfigError):
        load_records(cfg, "dev")


def test_load_records_raise_on_bad_record(shared_data, monkeypatch):
    from instructedit.data.readers import DataError

    monkeypatch.setenv("INSTRUCTEDIT_DATA", str(shared_data))
    cfg = load_run_config(None, {"data.tasks": ["counterfact"], "data.hold_out": ["zsre"]})
    with pytest.raises(DataError, match=r"zsre_mend_train-1k\.json: record 534: field 'alt': empty target"):
        load_records(cfg, "train")


def test_data_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTEDIT_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / "..") == tmp_path / ".."
    with pytest.raises(CorpusNotFoundError, match="KnowEdit"):
        resolve_data_dir(tmp_path / "missing")
    monkeypatch.delenv("INSTRUCTEDIT_DATA")
    from instructedit.data import corpora

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(corpora, "_repo_root", lambda: tmp_path / "a" / "b")
    with pytest.raises(CorpusNotFoundError, match="zjunlp/KnowEdit"):
        resolve_data_dir()


def test_retag_gives_the_tags_preparation_gives(tmp_path):
    from instructedit.data.instructions import retag

    task = _task(tmp_path, [_cf(i) for i in range(120)])
    cfg = load_run_config(None).data
    seen = build_task(task, tmp_path, cfg)
    for setting, seed in (("unseen", 0), ("seen", 5), ("none", 0), (f"id:{task.instructions[1].id}", 0)):
        want = build_task(task, tmp_path, replace(cfg, instruction_setting=setting, seed=seed))
        for split, recs in seen.splits.items():
            assert retag(recs, setting, seed) == want.splits[split], (setting, split)
    with pytest.raises(ConfigError, match="instruction setting"):
        retag([], "sometimes")


def test_task_config_is_parsed_once_per_file_version(tmp_path, monkeypatch):
    import os
    import shutil

    from instructedit import config
    from instructedit.data.instructions import task_config

    shutil.copytree(config.CONFIG_DIR / "tasks", tmp_path / "tasks")
    monkeypatch.setattr(config, "CONFIG_DIR", tmp_path)
    first = task_config("recent")
    assert task_config("recent") is first and first == load_task("recent")
    p = tmp_path / "tasks" / "recent.yaml"
    p.write_text(p.read_text().replace("display_name: Recent", "display_name: Edited Recent", 1))
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new version even on a coarse clock
    assert task_config("recent").display_name.startswith("Edited") and task_config("recent") != first
    with pytest.raises(ConfigError, match="unknown task"):
        task_config("no-such-task")


def test_request_instruction_follows_the_training_setting(monkeypatch, tmp_path):
    from instructedit.config import Instruction
    from instructedit.data.instructions import choose_instruction, request_instruction

    pool = (Instruction("a", "A"), Instruction("b", "B"), Instruction("c", "C"), Instruction("u", "U", unseen=True))
    task = replace(load_task("recent"), instructions=pool)
    assert request_instruction(task, "none", "k")[0] is None
    assert request_instruction(task, "seen", "k") == (pool[0], "")  # no seed: the first seen one
    assert request_instruction(task, "unseen", "k")[0] == pool[0]  # never an instruction held out of training
    assert request_instruction(task, "id:c", "k")[0] == pool[2]
    assert request_instruction(task, "id:gone", "k")[0] == pool[0]
    picked = {request_instruction(task, "seen", f"k{i}", seed=3)[0] for i in range(40)}
    assert picked == set(pool[:3])
    assert request_instruction(task, "seen", "k7", seed=3)[0] == choose_instruction(task, "seen", 3, "k7", pool)
    monkeypatch.setenv("INSTRUCTEDIT_INSTRUCTION_SETS", str(tmp_path))
    ins, note = request_instruction(task, "seen", "k", instruction_set="missing")
    assert ins == pool[0] and "unavailable" in note and "task pool" in note
    with pytest.raises(ConfigError, match="no seen instructions"):
        request_instruction(replace(task, instructions=pool[3:]), "seen", "k")
