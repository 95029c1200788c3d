"""The report's provenance block, one run at a time (no MLflow needed)."""

import pandas as pd

from analysis.report import provenance


def _row(**kw):
    return pd.Series({"run_id": "r1", "kind": "", "method": "", **kw})


def test_training_run_provenance_is_complete():
    p = provenance(_row(kind="train", method="InstructEdit", git_commit="0123456789abcdef", dataset_hash="f" * 64,
                        model="smollm2-135m", model_source="x/SmolLM2.gguf (configs/models/smollm2-135m.yaml)",
                        best_step="20", seed="0", train_edits="320", checkpoint_edits="160",
                        **{"params.train.batch_size": "8", "params.train.max_steps": "40"},
                        command="python -m instructedit.demo"))
    assert p["git commit"] == ("0123456789ab", "") and p["dataset hash"][0] == "f" * 16
    assert p["model source"][0].startswith("x/SmolLM2.gguf") and p["checkpoint step"] == ("20", "selected by validation")
    assert p["seed"] == ("0", "")
    assert p["budget"][0] == "320 training edits (40 steps x batch 8); the selected checkpoint had seen 160"
    assert p["command"] == ("python -m instructedit.demo", "")


def test_baseline_and_missing_fields_say_so():
    p = provenance(_row(kind="eval", method="Pre-edit", model="tiny-llama", source_name="demo.py"))
    assert p["checkpoint step"][0] == "none" and p["seed"][0] == "none" and p["budget"][0] == "0 training edits"
    # the source is looked up in the model registry, and flagged as not logged with the run
    assert p["model source"][0].startswith("random weights") and "not logged" in p["model source"][1]
    assert p["command"] == ("demo.py", "entry point only (no command tag)")
    assert p["git commit"] == ("", "") and p["dataset hash"] == ("", "")  # shown as "not logged"
    hashed = provenance(_row(kind="eval", method="Pre-edit", dataset_hash="e" * 64))
    assert hashed["dataset hash"] == ("e" * 16, "of the records evaluated")
    editor_eval = provenance(_row(kind="eval", method="InstructEdit", editor_run="abcdef0123"))
    assert editor_eval["checkpoint step"][0] == "see editor run abcdef01" == editor_eval["budget"][0]
    planned = provenance(_row(kind="train", **{"params.train.batch_size": "8", "params.train.max_steps": "30"}))
    assert planned["budget"][0] == "up to 240 training edits (30 steps x batch 8)" and "planned" in planned["budget"][1]


def test_a_study_parent_run_points_to_its_trials():
    """A study's parent run trains nothing: its provenance names the best trial's run and the seeds
    searched, never "not logged" and never the base config's single seed."""
    parent = _row(kind="study", method="InstructEdit", best_run_id="73140660b80f4da2",
                  **{"params.train.seed": "0", "params.study.space.train.seed": "grid[0, 1, 2]",
                     "params.study.space.arm": "grid['instructedit', 'multi-task']"})
    p = provenance(parent)
    assert p["checkpoint step"][0] == "the best trial's: see run 73140660"
    assert p["seed"] == ("searched: grid[0, 1, 2]", "one per trial") and p["dataset hash"][0] == "per trial"
    unfinished = provenance(_row(kind="study", method="InstructEdit"))
    assert unfinished["checkpoint step"] == ("none", "no trial finished") and unfinished["seed"] == ("", "")
    # a training run keeps its own fields even with the same tags beside it
    assert provenance(_row(kind="train", best_run_id="x"))["checkpoint step"] == ("", "")


def test_report_of_chosen_runs_only(store, tmp_path):
    """`--runs`: one experiment's earlier runs are not averaged into the cells (the demo passes its own)."""
    from analysis.report import build_report

    uri, exp, ids = store
    chosen = [ids["pre"][0], ids["instructedit"][0], ids["train"][-1]]
    rep = build_report(exp, out_dir=tmp_path / "rep", tracking_uri=uri, log=False, run_ids=chosen)
    page = rep.path.read_text()
    assert "3 runs (chosen with --runs)" in page
    assert page.count("<caption><a href=") == 3  # one provenance block per chosen run
    assert "mend-multi" not in page and "Hatched bars" not in page  # one run per cell: every interval shown
    assert {"task_bars", "instructed_vs_plain", "training_curves"} <= set(rep.figures)


def test_training_curves_of_a_study_whose_editors_trial_runs_trained(tmp_path, monkeypatch, new_store):
    """The table3 grid trains its editors only in study trials (kind trial): their loss histories are
    the report's training curves; a trial that only evaluated (a baseline arm) draws none."""
    import numpy as np
    import synthetic_runs
    from instructedit import tracking

    from analysis.report import _trained_runs, build_report
    from analysis.runs import run_index

    uri = new_store(tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    rng = np.random.default_rng(0)
    trained = synthetic_runs._train("grid", "ie-trial", "instructedit", "InstructEdit", synthetic_runs.TRAIN, rng,
                                    "seen", uri=uri, kind="trial")
    with tracking.run("grid", "pre-edit-trial", tags={"kind": "trial", "mode": "pre-edit", "method": "Pre-edit"},
                      tracking_uri=uri) as baseline:
        tracking.log_metrics({"test/zsre/reliability": 0.2})
    index = run_index("grid", tracking_uri=uri)
    assert set(index["run_id"]) == {trained, baseline}
    assert list(_trained_runs(index, uri)["run_id"]) == [trained]
    rep = build_report("grid", out_dir=tmp_path / "rep", tracking_uri=uri, log=False)
    assert "training_curves" in rep.figures
