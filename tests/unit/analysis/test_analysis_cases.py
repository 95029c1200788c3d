"""Table 3 from per-case artifacts in MLflow: seeds aggregated with an interval, n, the paired
InstructEdit - multi-task MEND difference, the budget header; runs without per-case results stay in
the metric-based table."""

import numpy as np
import pandas as pd
import pytest
from instructedit import cli, tracking
from instructedit.evaluate import stats
from instructedit.evaluate.metrics import format_estimate

EXP = "cases-exp"
N = 40
IE, MT = "InstructEdit", "MEND (multi-task)"


def _fmt(est, metric="reliability"):
    return format_estimate(est.mean, est.ci_low, est.ci_high, est.n, metric)


def _values():
    rng = np.random.default_rng(0)
    base = (rng.random(N) < 0.4).astype(float)
    s0, s1 = base.copy(), base.copy()
    s0[np.where(base == 0)[0][:10]] = 1.0
    s1[np.where(base == 0)[0][:4]] = 1.0
    return {"base": base, "s0": s0, "s1": s1, "stale": np.zeros(N)}


def _log_cases(run_id, values, tmp, name):
    """What evaluate/runner.log_results logs: eval/<split>/cases.parquet of the run."""
    rows = [{"case_id": f"z{i:02d}", "task": "zsre", "instruction_setting": "seen", "reliability": float(v),
             "reliability_instructed": 1.0} for i, v in enumerate(values)]
    path = tmp / name / "cases.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(path)
    tracking.log_artifact(path, "eval/test", run_id=run_id)


def _train(uri, method, mode, seed, best_step, checkpoint_edits):
    tags = {"kind": "train", "method": method, "mode": mode, "tasks": "counterfact,recent,convsent",
            "seed": str(seed), "instruction_setting": "seen" if mode == "instructedit" else "none",
            "best_step": str(best_step), "train_edits": "320", "checkpoint_edits": str(checkpoint_edits)}
    with tracking.run(EXP, f"train-{mode}-s{seed}", tags=tags, tracking_uri=uri) as rid:
        pass
    return rid


def _eval(uri, method, mode, **tags):
    with tracking.run(EXP, f"eval-{mode}", tags={"kind": "eval", "method": method, "mode": mode,
                                                 "instruction_setting": "seen", **tags}, tracking_uri=uri) as rid:
        pass
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_store):
    tmp = tmp_path_factory.mktemp("cases")
    uri = new_store(tmp / "mlflow.db")
    v = _values()
    ie0 = _train(uri, IE, "instructedit", 0, 20, 160)
    _log_cases(ie0, v["stale"], tmp, "ie0-old")  # an evaluation logged into the training run ...
    _log_cases(_eval(uri, IE, "instructedit", editor_run=ie0, seed="0"), v["s0"], tmp, "ie0")  # ... redone later
    _log_cases(_train(uri, IE, "instructedit", 1, 30, 240), v["s1"], tmp, "ie1")
    mt = _train(uri, MT, "multi-task", 3, 25, 200)
    _log_cases(_eval(uri, MT, "multi-task", editor_run=mt), v["base"], tmp, "mt")  # seed: the editor run's
    _log_cases(_eval(uri, "Pre-edit", "pre-edit"), np.zeros(N), tmp, "pre")
    with tracking.run(EXP, "eval-ft-l", tags={"kind": "eval", "method": "FT-L", "mode": "ft-l"},
                      tracking_uri=uri):  # an older run: metrics only, no per-case artifact
        tracking.log_metrics({"test/zsre/reliability": 0.9})
    return uri, v, tmp


def test_report_tables_from_per_case_artifacts(store, capsys):
    uri, v, tmp = store
    out, results = tmp / "rep", tmp / "docs" / "table3"
    # a table an earlier report made that this one does not, and a file no report makes
    results.mkdir(parents=True)
    (results / "task_scaling_cases.md").write_text("stale")
    (results / "README.md").write_text("mine")
    assert cli.main(["report", "--experiment", EXP, "--tracking-uri", uri, "--out", str(out), "--no-log",
                     "--results-dir", str(results)]) == 0
    printed = capsys.readouterr().out
    text = (out / "tables" / "table3_cases.md").read_text()
    lines = text.splitlines()

    # seeds are one row with an interval over seeds and cases; the stale seed-0 evaluation is left out
    ie = stats.bootstrap(np.stack([v["s0"], v["s1"]]))
    assert ie.mean == pytest.approx((v["s0"].mean() + v["s1"].mean()) / 2)
    head = next(line for line in lines if line.startswith("| task | metric | n |"))
    assert head == f"| task | metric | n | Pre-edit | {MT} | {IE} (2 seeds) |"
    row = next(line for line in lines if line.startswith("| zsre | reliability | "))
    assert row == (f"| zsre | reliability | {N} | {_fmt(stats.bootstrap(np.zeros(N)))} | "
                   f"{_fmt(stats.bootstrap(v['base']))} | {_fmt(ie)} |")
    assert "1 evaluation run(s) with per-case results left out" in text and "train-instructedit-s0" in text

    # the paired difference, over the same cases
    section = text.split(f"## {IE} - {MT}, paired")[1]
    diff = stats.paired(np.stack([v["s0"], v["s1"]]), v["base"][None, :])
    assert diff.ci_low > 0
    assert f"| zsre | reliability | {_fmt(diff)} | {N} |" in section.split("##")[0]

    # the budget of each row from its training runs (the eval run of MEND links to its editor run)
    assert f"| {IE} | 2 (0, 1) | 320 | 20, 30 | 160, 240 |" in lines
    assert f"| {MT} | 1 (3) | 320 | 25 | 200 |" in lines
    assert "| Pre-edit | – | 0 (no trained editor) | – | – |" in lines

    # the run without per-case results is still in the metric-based Table 3, and only it
    metric_table = (out / "tables" / "table3.md").read_text()
    assert "| FT-L |" in metric_table and IE not in metric_table
    page = (out / "report.html").read_text()
    assert f"{IE} (2 seeds)" in page and "for the runs without per-case results" in page

    # --results-dir: the same Markdown, written whole (no temporary file left)
    assert (results / "table3_cases.md").read_text() == text and (results / "table3.md").exists()
    assert not list(results.glob("*.tmp")) and str(results / "table3_cases.md") in printed
    assert not (results / "task_scaling_cases.md").exists() and "removed (no longer made" in printed
    assert (results / "README.md").read_text() == "mine"


def test_single_task_editors_fill_only_the_tasks_they_trained_on():
    """MEND (single-task) is "the editor trained on the task shown": on the hold-out ZsRE, which none
    of them trained on, its cells stay empty (a note points to Table 1) instead of showing whichever
    editor ran last; its budget lists every editor, named by its training task."""
    from analysis import cases

    st, ie = "MEND (single-task)", IE
    runs = pd.DataFrame([
        {"run_id": f"st-{t}", "run_name": f"st-{t}", "row": st, "method_tag": st, "seed": "0", "tasks": t,
         "study": "table3-single", "instruction_setting": "none", "start_time": i, "train_edits": "4800",
         "best_step": step, "checkpoint_edits": str(int(step) * 8)}
        for i, (t, step) in enumerate([("recent", "300"), ("counterfact", "600")])
    ] + [{"run_id": "ie", "run_name": "ie", "row": ie, "method_tag": ie, "seed": "0", "tasks": "counterfact,recent",
          "study": "", "instruction_setting": "seen", "start_time": 9, "train_edits": "4800", "best_step": "600",
          "checkpoint_edits": "4800"}])
    every = pd.DataFrame([{"source": r, "seed": "0", "task": task, "case_id": f"{task}{i}", "reliability": 1.0}
                          for r in runs["run_id"] for task in ("counterfact", "recent", "zsre") for i in range(3)])
    kept, runs = cases.choose(every, runs)
    got = kept.groupby("task")["source"].unique().map(sorted).to_dict()
    assert got == {"counterfact": ["ie", "st-counterfact"], "recent": ["ie", "st-recent"], "zsre": ["ie"]}
    assert cases.untrained_tasks(every, kept, runs) == {st: ["zsre"]}
    table, note = cases.budget_table(cases.CaseTables(kept.assign(method=kept["source"].map(
        runs.set_index("run_id")["row"])), runs))
    assert (f"| {st} | 1 (0); an editor per task (counterfact, recent) | 4800 | 600 (counterfact), 300 (recent) | "
            "4800 (counterfact), 2400 (recent) |") in table.splitlines()
    assert note == ""
