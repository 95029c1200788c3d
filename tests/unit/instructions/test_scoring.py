"""Scorers: the trial editor's run config and cache key; in-process scoring with failures."""

from instructedit.config import load_run_config
from instructedit.instructions.scoring import LengthScorer, TrialEditorScorer, score_all, scorer_id


def test_trial_config_trains_one_task_on_the_candidate_only():
    s = TrialEditorScorer(base=load_run_config(None), model="tiny-llama", max_steps=7, train_records=5)
    cfg = s.trial_config("recent", "trial-set")
    assert cfg.model == "tiny-llama" and cfg.data.tasks == ("recent",) and cfg.data.hold_out == ()
    assert cfg.data.instruction_set == "trial-set" and cfg.data.instruction_setting == "seen"
    assert cfg.data.max_records == 5 and cfg.train.max_steps == 7 and cfg.train.val_every == 7
    assert cfg.train.num_workers == 1


def test_trial_cache_key_follows_every_setting():
    a = TrialEditorScorer(model="tiny-llama")
    assert scorer_id(a) == scorer_id(TrialEditorScorer(model="tiny-llama"))
    assert scorer_id(a) != scorer_id(TrialEditorScorer(model="tiny-llama", max_steps=31))
    assert scorer_id(a) == scorer_id(TrialEditorScorer(model="tiny-llama", verbose=True))


def test_score_all_in_process_keeps_order_and_records_failures():
    def flaky(task, text):
        if "bad" in text:
            raise RuntimeError("trial crashed")
        return float("nan") if "nan" in text else LengthScorer(4)(task, text)

    out = score_all(flaky, "t", ["a b c d", "bad one", "nan one"], executor="local")
    assert out[0].score == 1.0
    assert out[1].score is None and "trial crashed" in out[1].error
    assert out[2].score is None and "non-finite" in out[2].error
