"""On the real ConvSent corpus: a record's drawdown probes are about topics of its own split."""

import pytest
from instructedit.config import DataConfig, RunConfig
from instructedit.data.pipeline import load_records
from instructedit.data.readers import CONVSENT_PROMPT

PREFIX, SUFFIX = CONVSENT_PROMPT.split("{topic}")


@pytest.fixture(scope="module")
def splits(shared_data):
    cfg = RunConfig(data=DataConfig(tasks=("convsent",), hold_out=(), data_dir=str(shared_data),
                                    instruction_setting="none", on_error="skip"))
    return {s: load_records(cfg, s, ["convsent"]) for s in ("train", "val", "test")}


def test_drawdown_probes_come_from_the_same_split(splits):
    for split, recs in splits.items():
        topics = {r.sentiment.topic.lower() for r in recs}
        sentences = {s for r in recs for s in r.sentiment.good + r.sentiment.bad}
        assert recs and all(len(r.locality) == 2 for r in recs), split
        for r in recs:
            for p in r.locality:
                assert p.kind == "other_topic"
                topic = p.prompt[len(PREFIX): len(p.prompt) - len(SUFFIX)].lower()
                assert topic in topics and topic != r.sentiment.topic.lower(), (split, r.case_id, topic)
                assert p.answer[0] in sentences
    # the test split's probes never name a training topic (topics are unique per record here)
    train_topics = {r.sentiment.topic.lower() for r in splits["train"]}
    test_only = {r.sentiment.topic.lower() for r in splits["test"]} - train_topics
    probe_topics = {p.prompt[len(PREFIX): len(p.prompt) - len(SUFFIX)].lower()
                    for r in splits["test"] for p in r.locality}
    assert probe_topics <= {r.sentiment.topic.lower() for r in splits["test"]}
    assert len(probe_topics & test_only) > 0.8 * len(probe_topics)
