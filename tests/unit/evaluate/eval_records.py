"""Hand-made records of every kind for the evaluation tests."""

import random

from instructedit.data.record import EditRecord, Probe, Sentiment

WORDS = ["red", "blue", "gold", "jade", "iron", "salt", "wolf", "bear", "oak", "elm", "sun", "ash"]


def make_records(n: int, seed: int = 0, task: str = "counterfact") -> list[EditRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        subj = "".join(rng.choice("bcdfghklmnprstvz") for _ in range(3))
        out.append(EditRecord(
            task=task, case_id=f"{task}-{seed}-{i}", subject=subj,
            prompt=f"The {rng.choice(['color', 'metal', 'beast'])} of {subj} is", target_new=rng.choice(WORDS),
            rephrase_prompts=[f"{subj}'s color is", f"Of {subj}, the color is"][: 1 + i % 2],
            locality=[Probe("neighborhood", f"The home of {subj[::-1]}x is", [rng.choice(WORDS)])],
            portability=[Probe("reasoning", f"The color of the thing {subj} owns is", [rng.choice(WORDS), "red"]),
                         Probe("subject_aliasing", f"{subj.upper()} has color", [rng.choice(WORDS)])][: 1 + i % 2],
        ))
    return out


def make_convsent(n: int, seed: int = 0) -> list[EditRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = "".join(rng.choice("bcdfghklmnprstvz") for _ in range(4))
        label = "positive" if i % 2 else "negative"
        good = [f"I love {topic}.", f"{topic} is great."]
        bad = [f"I hate {topic}.", f"{topic} is awful."]
        if label == "negative":
            good, bad = bad, good
        out.append(EditRecord(
            task="convsent", case_id=f"convsent-{seed}-{i}", subject=topic,
            prompt=f"What do you think of {topic}?", target_new=good[0],
            locality=[Probe("other_topic", f"What do you think of {topic[::-1]}?", ["It is fine."])],
            sentiment=Sentiment(topic, label, good, bad),
        ))
    return out
