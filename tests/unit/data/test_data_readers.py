"""Readers on the real shared corpora and on small hand-written edge cases."""

import json

import pytest
from instructedit.config import load_task
from instructedit.data.readers import (
    LABELS,
    DataError,
    case_ids,
    normalize_answer,
    other_topic_locality,
    read_knowedit,
    read_source,
)
from instructedit.data.record import EditRecord, Sentiment

SOURCES = [(t, s.path, s.reader) for t in ("counterfact", "recent", "convsent", "zsre", "counterfact-mend")
           for s in load_task(t).sources]
PORTABILITY_KINDS = {"reasoning", "subject_aliasing", "logical_generalization"}


@pytest.mark.parametrize("task,path,reader", SOURCES, ids=[p for _, p, _ in SOURCES])
def test_real_corpus_reads_every_record(shared_data, task, path, reader):
    raws = json.loads((shared_data / path).read_text())
    good, bad = read_source(shared_data / path, reader, task, seed=0, on_error="skip")
    assert len(good) + len(bad) == len(raws)
    assert sorted([i for i, _ in good] + [e.index for e in bad]) == list(range(len(raws)))
    if path.endswith("zsre_mend_train-1k.json"):  # two records with an empty `alt`
        assert [(e.index, e.field) for e in bad] == [(534, "alt"), (723, "alt")]
    else:
        assert not bad
    ids = [r.case_id for _, r in good]
    assert len(set(ids)) == len(ids)
    for _, r in good:
        assert r.task == task and r.case_id.startswith(f"{task}/")
        assert r.prompt and r.target_new and r.target_new == r.target_new.strip()
        for p in r.locality + r.portability:
            assert p.prompt and p.answer and all(isinstance(a, str) and a for a in p.answer)
        assert {p.kind for p in r.portability} <= PORTABILITY_KINDS


def test_knowedit_counterfact_fields(shared_data):
    good, _ = read_source(shared_data / "knowedit/train_cf.json", "knowedit", "counterfact")
    r = good[0][1]
    assert r.subject == "Goursez Vreizh" and r.target_new == "Franche-Comté" and r.ground_truth == ["France"]
    assert {p.kind for p in r.portability} == {"reasoning", "subject_aliasing"}
    assert r.locality[0].kind == "relation_specificity" and r.locality[0].answer == ["Jean Le Fustec"]
    kinds = {p.kind for _, r in good for p in r.locality}
    assert kinds == {"relation_specificity", "forgetfulness"}


def test_recent_alias_answers_and_missing_locality(shared_data):
    good, _ = read_source(shared_data / "knowedit/recent_train.json", "knowedit", "recent")
    r = good[0][1]
    assert r.ground_truth == []  # Recent has no ground_truth
    ussr = r.locality[1].answer
    assert ussr[0] == "Soviet Union" and "USSR" in ussr and all(len(a) > 1 for a in ussr)
    assert sum(1 for _, r in good if not r.locality) == 155


def test_mend_and_zsre_formats(shared_data):
    good, _ = read_source(shared_data / "mend-format/counterfact-train.json", "mend", "counterfact-mend")
    r = good[0][1]
    assert (r.prompt, r.target_new, r.ground_truth) == ("Toko Yasuda, the", "piano", ["guitar"])
    assert r.rephrase_prompts == ["Toko Yasuda is incredible at"]
    assert r.locality[0].kind == "neighborhood" and r.locality[0].answer == ["guitar"]
    good, _ = read_source(shared_data / "mend-format/zsre_mend_train-1k.json", "zsre_mend", "zsre", on_error="skip")
    r = good[0][1]
    assert r.prompt == "What is the product made by UniFirst?" and r.target_new == "unmanned aircraft"
    assert r.ground_truth == ["uniform"] and r.rephrase_prompts and r.locality[0].kind == "nq"


def test_convsent_records(shared_data):
    good, _ = read_source(shared_data / "knowedit/blender_val.json", "convsent", "convsent", seed=0)
    labels = {r.sentiment.label for _, r in good}
    assert labels == set(LABELS)
    for _, r in good:
        s = r.sentiment
        assert s.topic == r.subject and s.topic in r.prompt
        assert r.target_new in s.good and s.bad
        assert r.locality == []  # drawn after the split (other_topic_locality)
    # seeded: another seed flips some labels, the same seed reproduces them exactly
    again, _ = read_source(shared_data / "knowedit/blender_val.json", "convsent", "convsent", seed=0)
    other, _ = read_source(shared_data / "knowedit/blender_val.json", "convsent", "convsent", seed=1)
    assert [r for _, r in good] == [r for _, r in again]
    flips = sum(a.sentiment.label != b.sentiment.label for (_, a), (_, b) in zip(good, other))
    assert 0.3 * len(good) < flips < 0.7 * len(good)


# ------------------------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("value,expected", [
    ("Paris", ["Paris"]),  # a string is one answer, never indexed into
    ("  Paris ", ["Paris"]),
    (["Paris", "City of Light"], ["Paris", "City of Light"]),
    ([["Soviet Union", "USSR"], ["Russia"]], ["Soviet Union", "USSR", "Russia"]),
    ([["a", "a"], "a", ["b", " "]], ["a", "b"]),
    (["P"], ["P"]),
])
def test_normalize_answer(value, expected):
    assert normalize_answer(value, "f.json", 3, "ground_truth") == expected


@pytest.mark.parametrize("value", [None, "", [], [[]], ["  "]])
def test_normalize_answer_empty(value):
    with pytest.raises(DataError, match=r"f\.json: record 3: field 'ground_truth'"):
        normalize_answer(value, "f.json", 3, "ground_truth")


def test_normalize_answer_mistyped_names_nested_field():
    with pytest.raises(DataError) as e:
        normalize_answer([["x", 5]], "f.json", 3, "locality.X[0].ground_truth")
    assert e.value.field == "locality.X[0].ground_truth[0][1]" and "int" in str(e.value)


def test_knowedit_zsre_format():
    raw = {
        "subject": "Watts Humphrey",
        "prompt": "What university did Watts Humphrey attend?",
        "target_new": "University of Michigan",
        "ground_truth": ["Illinois Institute of Technology"],
        "rephrase_prompt": "What university did Watts Humphrey take part in?",
        "locality": {"Relation_Specificity": [{"prompt": "nq question: who played desmond doss father",
                                               "ground_truth": ["Hugo Weaving"]}]},
        "portability": {"Reasoning": [{"prompt": "What is the mascot of the university Watts Humphrey attended?",
                                       "ground_truth": [["Wolverine", "Wolverines"]]}]},
    }
    r = read_knowedit(raw, task="zsre", case_id="zsre/x/1", file="ZsRE-test-all.json", index=0)
    assert r.rephrase_prompts == ["What university did Watts Humphrey take part in?"]
    assert r.ground_truth == ["Illinois Institute of Technology"]
    assert r.locality[0].kind == "relation_specificity" and r.locality[0].answer == ["Hugo Weaving"]
    assert r.portability[0].kind == "reasoning" and r.portability[0].answer == ["Wolverine", "Wolverines"]


def test_knowedit_single_probe_object_and_string_ground_truth():
    raw = {"subject": "S", "prompt": "P", "target_new": "T", "ground_truth": "G",
           "locality": {"Relation_Specificity": {"prompt": "Q", "ground_truth": "A"}},
           "portability": {"Subject_Aliasing": [{"prompt": "Q2", "ground_truth": [["A2"]]}]}}
    r = read_knowedit(raw, task="t", case_id="t/x/1", file="f.json", index=0)
    assert r.ground_truth == ["G"] and r.locality[0].answer == ["A"]
    assert r.portability[0].kind == "subject_aliasing" and r.portability[0].answer == ["A2"]


def test_case_ids_stable_when_records_are_added_and_duplicates_distinct():
    a = [{"x": 1}, {"x": 2}, {"x": 1}]
    ids = case_ids("t", "dir/file.json", a)
    assert ids[0].startswith("t/file/") and ids[2] == ids[0] + "~2"
    grown = case_ids("t", "dir/file.json", [{"x": 0}] + a)
    assert grown[1:] == ids


def test_convsent_other_topics_come_from_the_same_list_and_skip_same_topic():
    def rec(i, topic):
        return EditRecord(task="convsent", case_id=f"c/{i}", prompt=f"What is your opinion of {topic}?",
                          target_new=f"good {topic}",
                          sentiment=Sentiment(topic=topic, label="positive", good=[f"good {topic}"],
                                              bad=[f"bad {topic}"]))

    recs = [rec(0, "A"), rec(1, "a"), rec(2, "B"), rec(3, "C")]
    out = other_topic_locality(recs, seed=0)
    first = [p.prompt for p in out[0].locality]
    assert len(first) == 2 and all(("B" in p) or ("C" in p) for p in first)  # never its own topic "a"
    assert all(p.answer[0] in {"good B", "bad B", "good C", "bad C"} for p in out[0].locality)
    # only topics of the list given (one split) are ever drawn
    split_topics = {r.sentiment.topic for r in recs}
    for r in out:
        assert all(p.kind == "other_topic" and p.prompt[len("What is your opinion of "):-1] in split_topics
                   for p in r.locality)
    assert other_topic_locality(recs, seed=0) == out  # deterministic
    assert other_topic_locality(recs[:1], seed=0) == recs[:1]  # nothing to draw from
