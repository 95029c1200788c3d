"""Unseen instructions are worth the name: at least three per task, unlike every seen instruction of
the task in wording (token-set Jaccard below 0.5) and in form (a question, numbered steps, a persona
or a terse command, a form no seen instruction of the task has). A close paraphrase in the seen
pool's own declarative form, like the single unseen instruction each task used to hold, fails."""

import re
from dataclasses import replace

import pytest
from instructedit.config import list_registry, load_task
from instructedit.data.instructions import tag
from instructedit.data.record import EditRecord, Sentiment

TASKS = list_registry("tasks")
MAX_JACCARD = 0.5


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9\[\]]+", text.lower()))


def jaccard(a: str, b: str) -> float:
    x, y = words(a), words(b)
    return len(x & y) / len(x | y)


FORMS = {
    "question": lambda t: t.rstrip().endswith("?"),
    "numbered": lambda t: bool(re.search(r"(^|\s)(1\)|1\.|step 1\b)", t.lower())
                               and re.search(r"\s(2\)|2\.|step 2\b)", t.lower())),
    "persona": lambda t: bool(re.match(r"(you are |play |pretend |act as an? )", t.lower())),
    "terse": lambda t: len(re.findall(r"[a-z\[\]]+", t.lower())) <= 6,
}


def forms(text: str) -> set[str]:
    return {name for name, test in FORMS.items() if test(text)}


def test_the_checks_catch_a_close_paraphrase():
    seen = "Replace the fact in the input with the counterfactual answer, and leave every other fact you know untouched."
    paraphrase = "A single fact about the subject has been changed; give the changed answer and keep the rest intact."
    assert not forms(paraphrase) and not forms(seen)  # same declarative form: no new form
    assert jaccard(seen, seen.replace("untouched", "as it is")) >= MAX_JACCARD
    assert "question" in forms("What is the new object?") and "numbered" in forms("1) Read. 2) Reply.")
    assert "persona" in forms("You are a clerk; file it.") and "terse" in forms("Update it.")


@pytest.mark.parametrize("name", TASKS)
def test_every_task_holds_out_at_least_three_unlike_instructions(name):
    t = load_task(name)
    assert len(t.unseen_pool) >= 3, f"{name}: {len(t.unseen_pool)} unseen instruction(s)"
    seen_forms = set().union(*(forms(s.text) for s in t.seen_pool))
    for u in t.unseen_pool:
        for s in t.seen_pool:
            assert jaccard(u.text, s.text) < MAX_JACCARD, f"{name}: {u.id} is too close to {s.id}"
        new = forms(u.text) - seen_forms
        assert new, f"{name}: {u.id} has no form the seen pool lacks ({sorted(forms(u.text))} vs {sorted(seen_forms)})"
    unseen_forms = set().union(*(forms(u.text) - seen_forms for u in t.unseen_pool))
    assert len(unseen_forms) >= 3, f"{name}: unseen instructions take only the forms {sorted(unseen_forms)}"


@pytest.mark.parametrize("name", TASKS)
def test_unseen_slots_match_the_seen_pool(name):
    """ConvSent's instructions carry [LABEL] and [TOPIC]; the unseen ones must too, and fill."""
    t = load_task(name)
    slots = set.intersection(*(set(re.findall(r"\[[A-Z]+\]", s.text)) for s in t.seen_pool))
    for u in t.unseen_pool:
        assert slots <= set(re.findall(r"\[[A-Z]+\]", u.text)), f"{name}: {u.id} lacks {slots}"
    if name == "convsent":
        assert slots == {"[LABEL]", "[TOPIC]"}
        rec = EditRecord(task="convsent", case_id="c1", prompt="What do you think of tea?", target_new="x",
                         subject="tea", sentiment=Sentiment(topic="tea", label="positive", good=[], bad=[]))
        tagged = {tag(replace(rec, case_id=f"c{i}"), t, "unseen", 0).instruction for i in range(200)}
        assert len(tagged) == len(t.unseen_pool)
        assert all("tea" in x and "positive" in x and "[" not in x for x in tagged)


def test_seen_ids_and_texts_are_unchanged():
    """Trained checkpoints were tagged with the seen pools: their ids and texts are frozen."""
    import hashlib

    digest = {}
    for name in ("counterfact", "recent", "convsent", "zsre", "counterfact-mend"):
        pool = "\n".join(f"{i.id}\t{i.text}" for i in load_task(name).seen_pool)
        digest[name] = hashlib.sha256(pool.encode()).hexdigest()[:12]
    assert digest == SEEN_DIGESTS


# sha256 of "id<TAB>text" lines of each seen pool, taken before the unseen instructions were rewritten
SEEN_DIGESTS = {"counterfact": "34c58cbdc44e", "recent": "65b1e224269e", "convsent": "3078a8b164bb",
                "zsre": "534fd2588d1a", "counterfact-mend": "98c34216d324"}
