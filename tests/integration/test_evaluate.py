"""`instructedit evaluate` end to end on a tiny model and the shared corpora: baselines, an editor
from an MLflow run, sequential mode, and the Table-3-shaped comparison."""

import json

import pandas as pd
import pytest
import torch
from instructedit.cli import main

COMMON = ["--max-records", "2", "--batch-size", "3", "--max-length", "48", "--quiet", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared CPU
    yield
    torch.set_num_threads(n)


@pytest.mark.timeout(300)
def test_evaluate_command(tmp_path, tracking_uri, shared_data, capsys):
    from instructedit import tracking
    from instructedit.config import EditorConfig, load_run_config, to_dict
    from instructedit.editor.mend import MendEditor
    from instructedit.models import build_model

    evals = tmp_path / "evals"
    # Pre-edit baseline -> a new eval run.
    assert main(["evaluate", "--baseline", "pre-edit", "--model", "tiny-llama", "--tasks", "counterfact,convsent",
                 "zsre", "--out", str(evals / "pre"), *COMMON]) == 0
    cases = pd.read_parquet(evals / "pre" / "cases.parquet")
    assert set(cases["task"]) == {"counterfact", "convsent", "zsre"} and len(cases) == 6
    # baselines edit from the plain prompt; the instructed probe columns use the seen instructions
    assert set(cases["instruction_setting"]) == {"seen"}
    assert cases[cases["task"] == "counterfact"]["reliability_instructed"].notna().all()
    summary = json.loads((evals / "pre" / "summary.json").read_text())
    assert set(summary["zsre"]["reliability"]) == {"mean", "ci_low", "ci_high", "n"}
    assert summary["zsre"]["reliability"]["n"] == 2
    runs = tracking.search_runs("instructedit")
    pre = runs[runs["tags.method"] == "Pre-edit"].iloc[0]
    assert pre["tags.kind"] == "eval" and pre["tags.mode"] == "pre-edit"
    assert "metrics.test/counterfact/reliability" in runs and "metrics.test/avg/locality" in runs
    assert "metrics.test/counterfact/reliability_ci_low" in runs and "metrics.test/zsre/reliability_gen_n" in runs
    assert pre["metrics.test/convsent/dd"] == 0.0
    assert set(tracking.list_artifacts(pre["run_id"], "eval/test")) == {
        "eval/test/cases.parquet", "eval/test/summary.csv", "eval/test/summary.json"}

    # An editor checkpoint tracked as a training run -> evaluated with --run, logged to that run.
    cfg = load_run_config(None, {"model": "tiny-llama", "mode": "instructedit", "editor.rank": 8,
                                 "data.tasks": ["counterfact"]})
    editor = MendEditor(build_model("tiny-llama"), EditorConfig(rank=8))
    ckpt = editor.save(tmp_path / "ckpt" / "editor.pt", extra={"run_config": to_dict(cfg)})
    with tracking.run("instructedit", "train", tags={"kind": "train", "mode": "instructedit",
                                                     "method": "InstructEdit", "tasks": "counterfact",
                                                     "instruction_setting": "seen"}) as rid:
        tracking.log_artifact(ckpt, "checkpoint")
    assert main(["evaluate", "--run", rid, "--out", str(evals / "ie"), *COMMON]) == 0
    run = tracking.get_run(rid)
    assert "test/counterfact/reliability" in run.data.metrics and "test/zsre/generalization" in run.data.metrics
    cases = pd.read_parquet(evals / "ie" / "cases.parquet")
    assert set(cases["task"]) == {"counterfact", "zsre"}  # the editor's tasks + the hold-out task
    assert set(cases["instruction_setting"]) == {"seen"} and cases["instruction_id"].str.len().gt(0).all()

    # FT-L, unseen instructions, sequential mode.
    assert main(["evaluate", "--baseline", "ft-l", "--model", "tiny-llama", "--tasks", "counterfact",
                 "--instructions", "unseen", "--sequential", "2", "--ftl-steps", "2",
                 "--out", str(evals / "ftl-seq"), *COMMON]) == 0
    seq = pd.read_csv(evals / "ftl-seq" / "sequential.csv")
    assert seq["k"].tolist() == [1, 2] and seq["reliability"].between(0, 1).all()

    # The comparison table from the folders and from the experiment.
    capsys.readouterr()
    assert main(["evaluate", "--compare-table", str(evals)]) == 0
    printed = capsys.readouterr().out
    assert "Pre-edit" in printed and "InstructEdit" in printed
    md = (evals / "table.md").read_text()  # per-case folders: intervals, seeds aggregated
    assert "| zsre | reliability | 2 |" in md and "| zsre | reliability_instructed | 2 |" in md
    assert "## Instructed - plain probes, paired (per method)" in md  # the gap of every method
    # An experiment's Table 3 is the report's (the analysis layer): evaluate points there in one line.
    capsys.readouterr()
    assert main(["evaluate", "--compare-table", "instructedit"]) == 2
    err = capsys.readouterr().err
    assert "instructedit report --experiment instructedit" in err and len(err.strip().splitlines()) == 1
    assert main(["report", "--experiment", "instructedit", "--out", str(tmp_path / "t"), "--no-log"]) == 0
    # these runs logged per-case results: their Table 3 is table3_cases (seeds x cases intervals)
    table3 = (tmp_path / "t" / "tables" / "table3_cases.md").read_text()
    assert "Pre-edit" in table3 and "InstructEdit" in table3 and "| zsre | reliability | 2 |" in table3
    info = json.loads((evals / "pre" / "run.json").read_text())
    assert info["tags"]["method"] == "Pre-edit" and info["run_id"]
