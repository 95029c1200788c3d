"""Tagging is pure and seeded; unseen instructions never leak into the seen setting."""

import collections

import pytest
from instructedit.config import Instruction, load_task, replace
from instructedit.data.instructions import apply_template, choose_instruction, fill_slots, tag
from instructedit.data.record import EditRecord, Probe, Sentiment


def _rec(i, task="counterfact"):
    return EditRecord(task=task, case_id=f"{task}/f/{i:06d}", prompt=f"Prompt {{x}} number {i} is",
                      target_new="T", subject=f"S{i}", locality=[Probe("relation_specificity", "Loc is", ["A"])])


def test_apply_template():
    t = load_task("counterfact")
    assert apply_template(t, "", "The capital is") == "The capital is"
    assert apply_template(t, "Do it.", "The {capital} is") == (
        "Task: CounterFact\nDescription: Do it.\nInput: The {capital} is")


@pytest.mark.parametrize("task", ["counterfact", "recent", "zsre", "counterfact-mend"])
def test_seen_never_unseen_and_unseen_only_unseen(task):
    t = load_task(task)
    unseen = {i.id for i in t.unseen_pool}
    seen_ids = collections.Counter(tag(_rec(i, task), t, "seen", 0).instruction_id for i in range(2000))
    assert not set(seen_ids) & unseen
    assert set(seen_ids) == {i.id for i in t.seen_pool}  # every seen instruction gets used
    assert {tag(_rec(i, task), t, "unseen", 0).instruction_id for i in range(300)} == unseen


def test_none_and_fixed_id():
    t = load_task("recent")
    r = tag(_rec(1, "recent"), t, "none", 0)
    assert (r.instruction_id, r.instruction, r.edit_input) == ("", "", r.prompt)
    r = tag(_rec(1, "recent"), t, "id:recent-03", 5)
    assert r.instruction_id == "recent-03" and r.instruction == t.instruction("recent-03").text
    assert r.edit_input.endswith("\nInput: " + r.prompt) and r.edit_input.startswith("Task: Recent\n")


def test_deterministic_and_depends_only_on_seed_and_case_id():
    t = load_task("counterfact")
    recs = [_rec(i) for i in range(200)]
    a = [tag(r, t, "seen", 3) for r in recs]
    # the same record alone, in another order, or in a grown list keeps its tag
    b = [tag(r, t, "seen", 3) for r in reversed([_rec(i) for i in range(-50, 200)])][::-1][50:]
    assert a == b
    other = [tag(r, t, "seen", 4) for r in recs]
    assert sum(x.instruction_id != y.instruction_id for x, y in zip(a, other)) > 100
    assert recs[0].instruction_id == ""  # tag returns a copy


def test_locality_probes_never_get_an_instruction():
    t = load_task("counterfact")
    r = tag(_rec(7), t, "seen", 0)
    assert r.locality == [Probe("relation_specificity", "Loc is", ["A"])]


def test_convsent_slots_filled():
    t = load_task("convsent")
    for i in range(50):
        label = "positive" if i % 2 else "negative"
        r = EditRecord(task="convsent", case_id=f"c/{i}", prompt="What is your opinion of Lyon?", target_new="x",
                       subject="Lyon", sentiment=Sentiment("Lyon", label, ["x"], ["y"]))
        for setting in ("seen", "unseen"):
            out = tag(r, t, setting, 0)
            assert "[LABEL]" not in out.edit_input and "[TOPIC]" not in out.edit_input
            assert "Lyon" in out.instruction and label in out.instruction
    assert fill_slots("[TOPIC]!", EditRecord(task="t", case_id="c", prompt="p", target_new="t", subject="S")) == "S!"


def test_custom_pool_and_empty_unseen_pool():
    t = load_task("recent")
    pool = (Instruction("a", "A"), Instruction("b", "B", unseen=True))
    assert choose_instruction(t, "seen", 0, "x", pool).id == "a"
    assert choose_instruction(t, "unseen", 0, "x", pool).id == "b"
    with pytest.raises(Exception, match="no unseen instructions"):
        choose_instruction(replace(t, instructions=t.seen_pool), "unseen", 0, "x")
