"""Every bad-input case stops with an error that names the file, the record index and the field."""

import json

import pytest
from instructedit.config import ConfigError, load_task
from instructedit.data.instructions import tag
from instructedit.data.readers import DataError, read_source
from instructedit.data.record import EditRecord

CF = {"subject": "S", "prompt": "P is", "target_new": "T", "ground_truth": "G",
      "locality": {"Relation_Specificity": [{"prompt": "Q is", "ground_truth": "A"}]}, "portability": {}}
MEND = {"case_id": 1, "prompt": "P", "subject": "S", "target_new": "T", "ground_truth": "G",
        "rephrase_prompt": "R", "locality_prompt": "L", "locality_ground_truth": "LA"}
ZSRE = {"subject": "S", "src": "Q?", "pred": "p", "rephrase": "R?", "alt": "T", "answers": ["A"],
        "loc": "nq question: x", "loc_ans": "y", "cond": ""}
CS = {"ent": "Topic", "pos": ["I like it."], "neg": ["I don't."]}


def _with(base, **changes):
    d = json.loads(json.dumps(base))
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return d


CASES = [
    ("knowedit", _with(CF, target_new=...), "target_new", "missing"),
    ("knowedit", _with(CF, target_new=""), "target_new", "empty target"),
    ("knowedit", _with(CF, target_new="   "), "target_new", "empty target"),
    ("knowedit", _with(CF, target_new=["T"]), "target_new", "expected a string"),
    ("knowedit", _with(CF, prompt=7), "prompt", "expected a string"),
    ("knowedit", _with(CF, subject=...), "subject", "missing"),
    ("knowedit", _with(CF, ground_truth={"a": 1}), "ground_truth", "expected a string or a list"),
    ("knowedit", _with(CF, locality=[1]), "locality", "expected a mapping"),
    ("knowedit", _with(CF, locality={"Relation_Specificity": [{"ground_truth": "A"}]}),
     "locality.Relation_Specificity[0].prompt", "missing"),
    ("knowedit", _with(CF, locality={"Relation_Specificity": [{"prompt": "Q", "ground_truth": []}]}),
     "locality.Relation_Specificity[0].ground_truth", "empty answer"),
    ("knowedit", _with(CF, portability={"Reasoning": "x"}), "portability.Reasoning", "expected a list"),
    ("knowedit", _with(CF, rephrase_prompt=5), "rephrase_prompt", "expected a string or a list"),
    ("knowedit", ["not", "an", "object"], "<record>", "expected a JSON object"),
    ("mend", _with(MEND, locality_prompt=...), "locality_prompt", "missing"),
    ("mend", _with(MEND, target_new=""), "target_new", "empty target"),
    ("mend", _with(MEND, rephrase_prompt=None), "rephrase_prompt", "missing"),
    ("zsre_mend", _with(ZSRE, answers=...), "answers", "missing"),
    ("zsre_mend", _with(ZSRE, alt=""), "alt", "empty target"),
    ("zsre_mend", _with(ZSRE, answers=[3]), "answers[0]", "expected a string"),
    ("convsent", _with(CS, pos="I like it."), "pos", "expected a list"),
    ("convsent", _with(CS, neg=[]), "neg", "empty target"),
    ("convsent", _with(CS, ent=...), "ent", "missing"),
    ("convsent", _with(CS, pos=["ok", 3]), "pos[1]", "expected a string"),
]
GOOD = {"knowedit": CF, "mend": MEND, "zsre_mend": ZSRE, "convsent": CS}


@pytest.mark.parametrize("reader,bad,field,reason", CASES, ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES])
def test_bad_record_names_file_index_field(tmp_path, reader, bad, field, reason):
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps([GOOD[reader], GOOD[reader] | {"subject": "other"} if reader != "convsent"
                                else CS | {"ent": "Other"}, bad]))
    with pytest.raises(DataError) as e:
        read_source(path, reader, "t")
    err = e.value
    assert (err.file, err.index, err.field) == (str(path), 2, field)
    msg = str(err)
    assert str(path) in msg and "record 2" in msg and repr(field) in msg and reason in msg
    # skip mode: the two good records come through, the bad one is returned with its reason
    good, rejects = read_source(path, reader, "t", on_error="skip")
    assert [i for i, _ in good] == [0, 1] and [r.index for r in rejects] == [2]


@pytest.mark.parametrize("text,reason", [
    ('[{"subject": "S", "prompt": "P"', "malformed JSON at line 1"),
    ('{"subject": "S"}', "expected a JSON array"),
    ("", "malformed JSON"),
])
def test_bad_file(tmp_path, text, reason):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(DataError, match=reason) as e:
        read_source(path, "knowedit", "t")
    assert str(path) in str(e.value)
    good, rejects = read_source(path, "knowedit", "t", on_error="skip")
    assert good == [] and rejects[0].index is None


def test_jsonl_bad_line_names_record(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(CF) + "\n" + "{oops\n")
    with pytest.raises(DataError, match=r"c\.jsonl: record 1: malformed JSON on line 2"):
        read_source(path, "knowedit", "t")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_source(tmp_path / "nope.json", "knowedit", "t")


def test_unknown_task_and_reader_and_instruction_id():
    with pytest.raises(ConfigError, match="unknown task 'nosuch'.*counterfact"):
        load_task("nosuch")
    with pytest.raises(ConfigError, match="unknown reader 'csv'"):
        read_source("x.json", "csv", "t")
    task = load_task("recent")
    rec = EditRecord(task="recent", case_id="c", prompt="P", target_new="T")
    with pytest.raises(ConfigError, match=r"recent\.yaml.*unknown instruction id 'recent-99'"):
        tag(rec, task, "id:recent-99", 0)
    with pytest.raises(ConfigError, match="none\\|seen\\|unseen"):
        tag(rec, task, "sometimes", 0)
