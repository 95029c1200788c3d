"""Facts whose prompts end with the subject: a random-weights model follows a change at the
subject's last token only at the very next position, so that is where an edit can show."""

from instructedit.data.batches import encode_pairs
from instructedit.data.record import EditRecord, Probe

WORDS = ["red", "blue", "gold", "jade", "iron", "salt", "wolf", "bear", "oak", "elm", "sun", "ash"]
SUBJECTS = ["Freedonia", "Alice Smith", "Eiffel Tower", "Bob Jones", "Mars", "Kansas"]


def fact_records(n: int = 4) -> list[EditRecord]:
    return [EditRecord(task="counterfact", case_id=f"f{i}", subject=s, prompt=f"A story about {s}",
                       target_new=WORDS[i], rephrase_prompts=[f"Tell me about {s}"],
                       locality=[Probe("neighborhood", "The sky is", ["blue"])])
            for i, s in enumerate(SUBJECTS[:n])]


def fact_batch(tok, n: int = 3):
    recs = fact_records(n)
    return encode_pairs(tok, [r.prompt for r in recs], [r.target_new for r in recs], list(range(n)),
                        meta=[{"subject": r.subject} for r in recs])
