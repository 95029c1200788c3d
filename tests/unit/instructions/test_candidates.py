"""Cleaning completions into candidate instructions; the JSON cache."""

from instructedit.instructions.cache import CachedWriter, JsonCache
from instructedit.instructions.candidates import clean, dedupe_key, required_slots
from instructedit.instructions.scoring import LengthScorer, scorer_id

SLOTS = ("[LABEL]", "[TOPIC]")


def test_required_slots_come_from_the_task_pool(toy_task, slot_task):
    assert required_slots(toy_task) == ()
    assert required_slots(slot_task) == SLOTS


def test_clean_strips_preamble_numbering_and_quotes():
    raw = 'Sure! Here is an instruction:\n\n1. "Update the fact to the new answer given."\nExplanation: ...'
    c = clean(raw)
    assert c.text == "Update the fact to the new answer given." and c.status == "ok"
    assert clean("**Instruction:** Replace the fact with the new target answer.").text == \
        "Replace the fact with the new target answer."


def test_clean_drops_parroted_feedback():
    c = clean("The instruction's performance is 0.589. Rewrite the fact to the new answer.")
    assert c.text == "Rewrite the fact to the new answer."
    assert clean("The best instructions are 0.650 and not available.").status == "rejected:echoes_scores"


def test_clean_rejects_empty_and_short():
    assert clean("   \n ").status == "rejected:empty"
    assert clean("Edit it.").status == "rejected:too_short"


def test_clean_bounds_length_at_a_sentence():
    raw = "Change the fact to the new answer. " + "Keep everything else about the subject unchanged " * 20
    c = clean(raw, max_chars=120)
    assert c.status == "truncated" and len(c.text) <= 120 and c.text == "Change the fact to the new answer."


def test_slots_canonicalised_repaired_or_rejected():
    c = clean("Speak about {topic} in a <Label> way, nothing else.", SLOTS)
    assert c.text == "Speak about [TOPIC] in a [LABEL] way, nothing else." and c.status == "ok"
    c = clean("Speak about [TOPIC] and nothing else at all.", SLOTS)
    assert c.status == "repaired" and c.text.endswith("Label: [LABEL].") and "[TOPIC]" in c.text
    assert clean("Speak about [TOPIC] and nothing else at all.", SLOTS, slot_policy="reject").status == \
        "rejected:missing_slots"
    long = "Speak about [TOPIC] with [LABEL] feeling. " + "Avoid other subjects entirely " * 30
    c = clean(long, SLOTS, max_chars=150)
    assert c.accepted and all(s in c.text for s in SLOTS) and len(c.text) <= 150


def test_dedupe_key_ignores_case_space_and_punctuation():
    assert dedupe_key("Update the FACT,  now!") == dedupe_key("update the fact now")
    assert dedupe_key("About [TOPIC].") != dedupe_key("About TOPIC.")


def test_cache_replays_and_keys_on_seed(tmp_path):
    class Counting:
        backend, model = "fake", "m"
        calls = 0

        def describe(self):
            return {"backend": "fake", "model": "m", "temperature": 1.0}

        def generate(self, messages, n=1, seed=0):
            self.calls += 1
            return [f"{seed}-{i}" for i in range(n)]

    inner = Counting()
    w = CachedWriter(inner, JsonCache(tmp_path))
    msgs = [{"role": "user", "content": "x"}]
    assert w.generate(msgs, 2, 5) == ["5-0", "5-1"]
    assert w.generate(msgs, 2, 5) == ["5-0", "5-1"] and inner.calls == 1
    assert w.generate(msgs, 2, 6) == ["6-0", "6-1"] and inner.calls == 2
    again = CachedWriter(inner, JsonCache(tmp_path))  # a new process: read from disk
    assert again.generate(msgs, 2, 5) == ["5-0", "5-1"] and inner.calls == 2 and again.hits == 1


def test_length_scorer_and_scorer_id():
    s = LengthScorer(target_words=4)
    assert s("t", "a b c d") == 1.0 and s("t", "a b") == 0.5 and s("t", "a " * 9) == 0.0
    assert scorer_id(s) == scorer_id(LengthScorer(target_words=4)) != scorer_id(LengthScorer(5))
