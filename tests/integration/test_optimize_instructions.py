"""End to end: `instructedit optimize-instructions` with the local SmolLM2 writer and real trial editors
(tiny-llama, a few steps, as Ray tasks), then the saved set drives the data pipeline, and a rerun
with the same seed makes no new LLM calls and no new trials."""

import re

import pytest
from instructedit import tracking
from instructedit.cli import main
from instructedit.config import load_run_config
from instructedit.data.instruction_sets import load_set


@pytest.mark.slow
def test_optimize_with_local_writer_and_trial_editor(tmp_path, monkeypatch, tracking_uri, shared_data, ray_local,
                                                     capsys):
    monkeypatch.setenv("INSTRUCTEDIT_INSTRUCTION_SETS", str(tmp_path / "sets"))
    args = ["optimize-instructions", "--task", "recent", "--backend", "local", "--model", "smollm2-135m", "--max-tokens", "40",
            "--rounds", "2", "--candidates", "2", "--patience", "1", "--seed", "1",
            "--scorer", "trial", "--trial-model", "tiny-llama", "--trial-steps", "2", "--trial-records", "8",
            "--trial-val-records", "4", "--trial-batch-size", "2", "--cache-dir", str(tmp_path / "cache"),
            "--set-name", "opt-test", "--experiment", "optimize-it"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[optimize] round 1/2" in out and re.search(r"LLM calls [1-9]", out)
    saved = load_set("opt-test")
    entries = saved["tasks"]["recent"]
    optimised = [e for e in entries if not e["unseen"]]
    assert optimised and all(0.0 <= e["score"] <= 1.0 for e in optimised)
    assert [e["unseen"] for e in entries].count(True) >= 1  # the YAML's unseen instruction stays unseen

    # The set is what the data pipeline tags records with.
    from instructedit.data.pipeline import load_records

    cfg = load_run_config(None, {"data.tasks": ["recent"], "data.hold_out": [], "data.max_records": 4,
                                 "data.instruction_set": "opt-test", "model": "tiny-llama"})
    recs = load_records(cfg, "train", ["recent"])
    assert recs and {r.instruction for r in recs} <= {e["text"] for e in optimised}

    # Rerun: everything comes from the cache.
    assert main(args) == 0
    out2 = capsys.readouterr().out
    assert "LLM calls 0" in out2 and "trials 0" in out2
    assert load_set("opt-test")["tasks"] == saved["tasks"] and load_set("opt-test")["version"] == 2
    runs = tracking.search_runs("optimize-it")
    assert len(runs) == 2 and set(runs["tags.kind"]) == {"optimize"}
