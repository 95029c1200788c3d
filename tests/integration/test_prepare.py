"""The whole Ray Data pipeline through the CLI, on the shared corpora and on a broken corpus."""

import json

import pyarrow.parquet as pq
import pytest
from instructedit.cli import main
from instructedit.config import load_run_config
from instructedit.data.pipeline import SPLITS, load_records

SHARED_FILES = [
    "knowedit/train_cf.json", "knowedit/recent_train.json", "knowedit/blender_val.json",
    "knowedit/blender_test.json", "mend-format/counterfact-train.json", "mend-format/counterfact-val.json",
    "mend-format/counterfact-edit.json", "mend-format/zsre_mend_train-1k.json",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, shared_data, ray_local):
    out = tmp_path_factory.mktemp("prep") / "prepared"
    assert main(["prepare", "--out", str(out), "--data-dir", str(shared_data)]) == 0
    return out


def test_default_prepare_accounts_for_every_record(prepared, shared_data):
    m = json.loads((prepared / "manifest.json").read_text())
    raw = {f: len(json.loads((shared_data / f).read_text())) for f in SHARED_FILES}
    assert m["source_records"] == raw and set(m["sources"]) == set(SHARED_FILES)
    assert all(len(h) == 64 for h in m["sources"].values())
    t = m["totals"]
    assert t["read"] == sum(raw.values()) == t["kept"] + t["rejected"] + t["balanced_out"] + t["capped"]
    assert m["rejected"]["zsre"] == 2 and t["rejected"] == 2
    assert set(m["counts"]) == {"counterfact", "recent", "convsent", "counterfact-mend", "zsre"}
    # The files hold 10000 / 1919 / 10000; 39 val and 150 test records share their prompt with a
    # train record and join train (pipeline.join_train_prompts).
    assert m["counts"]["counterfact-mend"] == {"train": 10189, "val": 1880, "test": 9850}
    assert (m["seed"], m["instruction_setting"], m["schema_version"]) == (0, "seen", 1)
    rejects = [json.loads(line) for line in (prepared / "rejects.jsonl").read_text().splitlines()]
    assert [(r["index"], r["field"], r["reason"]) for r in rejects] == [(534, "alt", "empty target"),
                                                                      (723, "alt", "empty target")]
    for task, counts in m["counts"].items():
        for split in SPLITS:
            table = pq.read_table(prepared / task / f"{split}.parquet")
            assert table.num_rows == counts[split]
            assert set(table.column("split").to_pylist()) <= {split}
    assert not list(prepared.parent.glob(".prepared.tmp-*"))


def test_ray_path_equals_in_process_path(prepared, shared_data, monkeypatch):
    monkeypatch.setenv("INSTRUCTEDIT_DATA", str(shared_data))
    cfg = load_run_config(None, {"data.tasks": ["counterfact", "recent", "convsent"], "data.hold_out": ["zsre"],
                                 "data.on_error": "skip"})
    from_parquet = load_run_config(None, {"data.tasks": ["counterfact", "recent", "convsent"],
                                          "data.hold_out": ["zsre"], "data.prepared_dir": str(prepared)})
    for split in SPLITS:
        assert load_records(from_parquet, split) == load_records(cfg, split)
    # a run asking for another instruction setting re-tags the prepared records
    none = load_run_config(None, {"data.tasks": ["recent"], "data.hold_out": [], "data.prepared_dir": str(prepared),
                                  "data.instruction_setting": "none"})
    assert all(r.edit_input == r.prompt and not r.instruction_id for r in load_records(none, "train"))


def test_rerun_gives_identical_records(prepared, shared_data, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["prepare", "--out", str(out), "--data-dir", str(shared_data), "--quiet"]) == 0
    assert "kept 26513, rejected 2" in capsys.readouterr().out
    for task_dir in prepared.iterdir():
        if task_dir.is_dir():
            for split in SPLITS:
                a = pq.read_table(task_dir / f"{split}.parquet")
                b = pq.read_table(out / task_dir.name / f"{split}.parquet")
                assert a.equals(b), (task_dir.name, split)
    assert (prepared / "rejects.jsonl").read_text() == (out / "rejects.jsonl").read_text()


@pytest.fixture
def broken_data(tmp_path):
    good = {"subject": "S", "prompt": "P is", "target_new": "T",
            "locality": {"Relation_Specificity": [{"prompt": "Q is", "ground_truth": [["A", "B"]]}]}}
    records = [good | {"subject": f"S{i}"} for i in range(20)]
    records[5] = good | {"target_new": ""}
    records[9] = good | {"prompt": 3}
    d = tmp_path / "data"
    (d / "knowedit").mkdir(parents=True)
    (d / "knowedit" / "recent_train.json").write_text(json.dumps(records))
    return d


def test_on_error_skip_writes_rejects(broken_data, tmp_path, ray_local):
    out = tmp_path / "out"
    rc = main(["prepare", "--out", str(out), "--data-dir", str(broken_data), "--tasks", "recent",
               "--on-error", "skip", "--quiet"])
    assert rc == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["index"], r["field"]) for r in rejects] == [(5, "target_new"), (9, "prompt")]
    assert all(r["reason"] and r["file"].endswith("recent_train.json") for r in rejects)
    m = json.loads((out / "manifest.json").read_text())
    assert m["rejected"] == {"recent": 2} and m["totals"]["kept"] == 18 and m["totals"]["read"] == 20


def test_failed_run_leaves_nothing_and_keeps_old_output(broken_data, tmp_path, ray_local, capsys):
    out = tmp_path / "out"
    rc = main(["prepare", "--out", str(out), "--data-dir", str(broken_data), "--tasks", "recent",
               "--on-error", "raise", "--quiet"])
    assert rc == 2  # a bad record is bad input
    err = capsys.readouterr().err
    assert "recent_train.json: record 5: field 'target_new': empty target" in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["data"]
    out.mkdir()
    (out / "keep.txt").write_text("old")
    assert main(["prepare", "--out", str(out), "--data-dir", str(broken_data), "--tasks", "recent",
                 "--on-error", "raise", "--quiet"]) == 2
    assert (out / "keep.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]


def test_bad_task_and_missing_data(tmp_path, capsys):
    assert main(["prepare", "--out", str(tmp_path / "o"), "--tasks", "nosuch"]) == 2
    assert "unknown task 'nosuch'" in capsys.readouterr().err
    assert main(["prepare", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "none")]) == 2
    assert "KnowEdit" in capsys.readouterr().err
    assert main(["prepare", "--out", str(tmp_path / "o"), "--instructions", "id:cf-99", "--tasks", "counterfact"]) == 2
    assert "unknown instruction id 'cf-99'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
