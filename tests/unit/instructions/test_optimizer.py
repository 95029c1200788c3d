"""The optimisation loop with cheap scorers: feedback, stopping, cache replay, the saved set, MLflow."""

import csv
import io
import re
from pathlib import Path

import pytest
from instructedit import tracking
from instructedit.data.instruction_sets import load_set, resolve_pool
from instructedit.instructions.openai_writer import OpenAIWriter
from instructedit.instructions.optimizer import OptimizeConfig, OptimizeError, optimize
from instructedit.instructions.scoring import LengthScorer


def plateau_scorer(task: str, text: str) -> float:
    """Improves with the variant number up to 3, then stays flat."""
    k = int(re.search(r"variant (\d+)", text).group(1))
    return min(k, 3) / 10


@pytest.fixture
def env(tmp_path, monkeypatch, tracking_uri):
    monkeypatch.setenv("INSTRUCTEDIT_INSTRUCTION_SETS", str(tmp_path / "sets"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-optimizer-test-key-000000")
    return tmp_path


def _cfg(tmp_path, **kw):
    base = {"rounds": 10, "candidates": 2, "patience": 2, "seed": 3, "executor": "local", "cache_dir": str(tmp_path / "cache"),
                "set_name": "optimized"}
    base.update(kw)
    return OptimizeConfig(**base)


def test_loop_feeds_scores_back_stops_on_plateau_and_rerun_is_free(openai_server, env, toy_task):
    writer = OpenAIWriter(model="fake", base_url=openai_server.url, max_retries=0)
    lines = []
    res = optimize(toy_task, writer, plateau_scorer, _cfg(env), progress=lines.append)

    # rounds: 0.2 -> 0.3 (improved) -> 0.3 -> 0.3: two rounds without improvement, patience 2
    assert res.stopped == "patience" and len(res.rounds) == 4
    assert [r.best_so_far for r in res.rounds] == [0.2, 0.3, 0.3, 0.3]
    assert [r.improved for r in res.rounds] == [True, True, False, False]
    assert len(openai_server.requests) == 4 and res.llm_calls == 4 and res.trials == 8
    # round 2's prompt carries round 1's scores, worst first
    second = openai_server.requests[1]["messages"][-1]["content"]
    assert "variant 1.\nThe instruction's performance is 0.100." in second
    assert second.index("variant 1.") < second.index("variant 2.")
    assert "[optimize] round 4/10" in "\n".join(lines)

    # the set: the 2 best (the toy task has 2 seen instructions), ties in writing order, unseen kept
    assert [c.text[-10:] for c in res.best] == ["variant 3.", "variant 4."]
    saved = load_set("optimized")
    assert saved["version"] == 1 and load_set("optimized.v1")["tasks"] == saved["tasks"]
    pool = resolve_pool(toy_task, "optimized")
    assert [i.unseen for i in pool] == [False, False, True] and pool[2].id == "tu"
    assert pool[0].text == res.best[0].text

    # MLflow: one run, kind=optimize, the candidate table
    run = tracking.get_run(res.run_id)
    assert run.data.tags["kind"] == "optimize" and run.data.tags["tasks"] == "toy"
    assert run.data.params["optimize.candidates"] == "2"
    table = tracking.download_artifacts(res.run_id, "optimize/candidates.csv")
    rows = list(csv.DictReader(io.StringIO(Path(table).read_text())))
    assert len(rows) == 8 and {r["round"] for r in rows} == {"1", "2", "3", "4"}
    assert float(rows[2]["score"]) == 0.3
    assert tracking.metric_history(res.run_id, "optimize/best_so_far")[-1] == (4, 0.3)

    # rerun, same seed: no request reaches the server, no trial runs, the same result
    again = optimize(toy_task, writer, plateau_scorer, _cfg(env), progress=lines.append)
    assert len(openai_server.requests) == 4
    assert again.llm_calls == 0 and again.trials == 0 and again.score_cache_hits == 8
    assert [(c.text, c.score) for c in again.best] == [(c.text, c.score) for c in res.best]
    assert [(r.best_in_round, r.new) for r in again.rounds] == [(r.best_in_round, r.new) for r in res.rounds]
    assert again.set_version == 2 and load_set("optimized")["tasks"] == saved["tasks"]

    # another seed is another experiment: new calls
    optimize(toy_task, writer, plateau_scorer, _cfg(env, seed=4, rounds=1, set_name=""))
    assert len(openai_server.requests) == 5


def test_round_budget_duplicates_and_ray_scoring_with_slots(openai_server, env, slot_task, ray_local):
    # The writer forgets [LABEL] and repeats itself: repaired, deduplicated, budget-limited.
    openai_server.responder = lambda body: [
        f"Talk about [TOPIC] warmly, version {body['seed'] % 3}." for _ in range(body["n"])]
    writer = OpenAIWriter(model="fake", base_url=openai_server.url, max_retries=0)
    res = optimize(slot_task, writer, LengthScorer(target_words=8),
                   _cfg(env, rounds=2, candidates=2, patience=5, executor="ray", set_name="slots"))
    assert res.stopped == "budget" and len(res.rounds) == 2
    statuses = [c.status for c in res.history]
    assert "duplicate" in statuses
    texts = [c.text for c in res.history if c.scored]
    assert texts and all("[LABEL]" in t and "[TOPIC]" in t for t in texts)
    saved = load_set("slots")["tasks"]["slotty"]
    assert saved[-1] == {"id": "su", "text": "Give [LABEL] opinions on [TOPIC] only.", "unseen": True}
    assert all("[LABEL]" in e["text"] and "[TOPIC]" in e["text"] for e in saved)

    # Nothing acceptable at all (the slot is rejected, not repaired): a clear error.
    openai_server.responder = lambda body: ["Talk about [TOPIC] warmly and nothing else."] * body["n"]
    with pytest.raises(OptimizeError, match="could be scored"):
        optimize(slot_task, writer, LengthScorer(), _cfg(env, rounds=1, slot_policy="reject"))
