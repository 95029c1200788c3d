"""Seen vs unseen instructions and task scaling as tables from per-case artifacts in MLflow: the
evaluations Table 3 leaves out (unseen ones, editors trained on fewer tasks) are used here, seeds
aggregated, cells and paired differences from instructedit.evaluate.stats, the files published
like table3_cases.md; an experiment without such runs gets a note, not an error."""

from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from instructedit import cli, tracking
from instructedit.evaluate import stats
from instructedit.evaluate.metrics import format_estimate

EXP = "studies-cases-exp"
N = 30  # cases per task
UNSEEN_N = 20  # the unseen evaluations cover the first 20 CounterFact cases only
IE = "InstructEdit"
ST = "MEND (single-task)"
ALL3 = "counterfact,recent,convsent"


def _fmt(est, metric="reliability"):
    return format_estimate(est.mean, est.ci_low, est.ci_high, est.n, metric)


def _line(text, start):
    return next(line for line in text.splitlines() if line.startswith(start))


class Store:
    """Runs of one experiment, each with eval/test/cases.parquet, values kept for the expectations."""

    def __init__(self, uri, tmp):
        self.uri, self.tmp, self.rng = uri, tmp, np.random.default_rng(7)
        self.values: dict[str, dict[str, np.ndarray]] = {}

    def run(self, name, tags, params=None, **cases):
        """A run with per-case results of `cases` (task -> number of cases); random 0/1 values."""
        with tracking.run(EXP, name, tags=tags, params=params, tracking_uri=self.uri) as rid:
            pass
        rows, self.values[name] = [], {}
        for task, n in cases.items():
            for metric in ("reliability", "generalization", "locality", "reliability_instructed"):
                self.values[name][f"{task}/{metric}"] = (self.rng.random(n) < 0.5).astype(float)
            for i in range(n):
                rows.append({"case_id": f"{task[0]}{i:02d}", "task": task, "instruction_setting":
                             tags.get("instruction_setting", ""),
                             **{m: self.values[name][f"{task}/{m}"][i] for m in
                                ("reliability", "generalization", "locality", "reliability_instructed")}})
        path = self.tmp / name / "cases.parquet"
        path.parent.mkdir(parents=True)
        pd.DataFrame(rows).to_parquet(path)
        tracking.log_artifact(path, "eval/test", run_id=rid)
        return rid

    def v(self, name, key):
        return self.values[name][key]


def _train(s, name, seed, tasks=ALL3, setting="seen", study="", method=IE, mode="instructedit", params=None,
           **cases):
    tags = {"kind": "trial" if study else "train", "method": method, "mode": mode, "tasks": tasks,
            "seed": str(seed), "instruction_setting": setting, "study": study}
    return s.run(name, tags, params, **cases)


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_store):
    tmp = tmp_path_factory.mktemp("studies_cases")
    s = Store(new_store(tmp / "mlflow.db"), tmp)
    # Table 3's InstructEdit editors, evaluated seen (logged into the training runs) on a training
    # task and the hold-out ZsRE; seeds 0 and 1 are evaluated again with unseen instructions.
    ie = {seed: _train(s, f"ie-s{seed}", seed, counterfact=N, zsre=N) for seed in (0, 1, 2)}
    s.run("unseen-s0", {"kind": "eval", "method": IE, "mode": "instructedit", "tasks": ALL3, "seed": "0",
                        "instruction_setting": "unseen", "editor_run": ie[0]}, counterfact=UNSEEN_N)
    # no seed tag: the seed is the editor run's
    s.run("unseen-s1", {"kind": "eval", "method": IE, "mode": "instructedit", "tasks": ALL3,
                        "instruction_setting": "unseen", "editor_run": ie[1]}, counterfact=UNSEEN_N)
    # The instructions study on two training tasks: seen and unseen arms of one seed; the optimised
    # arm (another instruction set) and a hyperparameter study's trial come later and must not
    # stand in for the seen arm.
    two = "counterfact,recent"
    _train(s, "instr-seen", 0, tasks=two, study="instructions", params={"data.instruction_set": ""}, recent=N)
    _train(s, "instr-unseen", 0, tasks=two, setting="unseen", study="instructions", recent=N)
    _train(s, "instr-optimised", 0, tasks=two, study="instructions", params={"data.instruction_set": "optimized"},
           recent=N)
    _train(s, "hparams-trial", 0, tasks=two, study="hparams", recent=N)
    # The task-scaling study's smaller arms; its three-task arm is Table 3's editors above.
    _train(s, "scale-recent", 0, tasks="recent", study="task-scaling", zsre=N, recent=N)
    _train(s, "scale-recent-cf", 0, tasks="recent,counterfact", study="task-scaling", zsre=N, recent=N,
           counterfact=N)
    # another method on ZsRE: not an InstructEdit arm
    _train(s, "mend-recent", 0, tasks="recent", method="MEND (multi-task)", mode="multi-task", setting="none",
           zsre=N)
    # Table 1: single-task editors (a study's trials) on their own task, the other one and ZsRE; the
    # unedited model on ZsRE only
    for task in ("recent", "counterfact"):
        _train(s, f"st-{task}", 0, tasks=task, study="table3-single", method=ST, mode="single-task", setting="none",
               counterfact=N, recent=N, zsre=N)
    s.run("pre-edit", {"kind": "eval", "method": "Pre-edit", "mode": "pre-edit"}, zsre=N)
    return s


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep")
    results = out / "docs"
    assert cli.main(["report", "--experiment", EXP, "--tracking-uri", store.uri, "--out", str(out / "rep"),
                     "--no-log", "--results-dir", str(results)]) == 0
    return out / "rep", results


def test_seen_vs_unseen_pairs_the_same_editors(store, report):
    out, _ = report
    text = (out / "tables" / "seen_unseen_cases.md").read_text()
    v = store.v
    main, instr = text.split("## InstructEdit trained on counterfact, recent, convsent")[1].split(
        "## InstructEdit trained on counterfact, recent")
    # seeds 0 and 1 have both settings (seed 2 only seen: left out); cells over the 20 shared cases
    assert _line(main, "| task | metric | n |") == "| task | metric | n | seen (2 seeds) | unseen (2 seeds) |"
    for metric in ("reliability", "reliability_instructed"):
        seen = np.stack([v(f"ie-s{i}", f"counterfact/{metric}")[:UNSEEN_N] for i in (0, 1)])
        unseen = np.stack([v(f"unseen-s{i}", f"counterfact/{metric}") for i in (0, 1)])
        assert _line(main, f"| counterfact | {metric} | ") == (
            f"| counterfact | {metric} | {UNSEEN_N} | {_fmt(stats.bootstrap(seen), metric)} | "
            f"{_fmt(stats.bootstrap(unseen), metric)} |")
        diff = stats.paired(unseen, seen, same_seeds=True)  # seed i of both is one editor
        assert diff.mean == pytest.approx(unseen.mean() - seen.mean())
        paired = main.split("### unseen - seen, paired")[1]
        assert _line(paired, f"| counterfact | {metric} | ") == f"| counterfact | {metric} | {_fmt(diff, metric)} | {UNSEEN_N} |"
    assert "counterfact: seed(s) 2" in main and "zsre" not in main  # hold-out tasks are not compared here
    assert "Evaluations: ie-s0, ie-s1, unseen-s0, unseen-s1." in main  # seed 2's evaluation is not shown

    # the study's arms: the seen arm, not the later optimised-set or other-study trial
    seen, unseen = v("instr-seen", "recent/reliability"), v("instr-unseen", "recent/reliability")
    assert _line(instr, "| recent | reliability | ") == (
        f"| recent | reliability | {N} | {_fmt(stats.bootstrap(seen))} | {_fmt(stats.bootstrap(unseen))} |")
    assert f"| recent | reliability | {_fmt(stats.paired(unseen, seen))} | {N} |" in instr
    assert "hparams-trial" not in text and "named instruction set left out: instr-optimised" in text


def test_task_scaling_rows_by_training_task_set(store, report):
    out, _ = report
    text = (out / "tables" / "task_scaling_cases.md").read_text()
    v = store.v
    arms = {"recent": ["scale-recent"], "recent + counterfact": ["scale-recent-cf"],
            "recent + counterfact + convsent": ["ie-s0", "ie-s1", "ie-s2"]}

    def m(arm, metric):
        return np.stack([v(r, f"zsre/{metric}") for r in arms[arm]])

    assert _line(text, "| Training tasks |") == ("| Training tasks | zsre reliability (n=30) | zsre generalization "
                                                 "(n=30) | zsre locality (n=30) | zsre reliability_instructed (n=30) |")
    rows = [line for line in text.splitlines() if line.startswith("| recent")]
    assert [r.split(" | ")[0] for r in rows[:3]] == ["| recent", "| recent + counterfact",
                                                     "| recent + counterfact + convsent (3 seeds)"]
    for row, arm in zip(rows, arms):
        cells = [_fmt(stats.bootstrap(m(arm, metric)), metric)
                 for metric in ("reliability", "generalization", "locality", "reliability_instructed")]
        assert row.split(" | ")[1:] == cells[:-1] + [cells[-1] + " |"]
    assert stats.bootstrap(m("recent + counterfact + convsent", "reliability")).mean == pytest.approx(
        m("recent + counterfact + convsent", "reliability").mean())

    # each arm against the one before, paired on the same ZsRE cases
    names = list(arms)
    for prev, cur in pairwise(names):
        section = text.split(f"### {cur} - {prev}, paired")[1].split("###")[0]
        for metric in ("reliability", "locality"):
            d = stats.paired(m(cur, metric), m(prev, metric))
            assert f"| zsre | {metric} | {_fmt(d, metric)} | {N} |" in section
    assert "Evaluations: ie-s0, ie-s1, ie-s2, scale-recent, scale-recent-cf." in text

    # each arm on its own training tasks: Recent for the first two (the three-task editors have no
    # Recent cases here), CounterFact for the last two; a task an arm never trained on is "–"
    own = text.split("### Each set on its training tasks")[1]
    assert _line(own, "| recent | reliability | ") == (
        f"| recent | reliability | {N} | {_fmt(stats.bootstrap(v('scale-recent', 'recent/reliability')))} | "
        f"{_fmt(stats.bootstrap(v('scale-recent-cf', 'recent/reliability')))} | – |")
    three = np.stack([v(f"ie-s{seed}", "counterfact/reliability") for seed in range(3)])
    assert _line(own, "| counterfact | reliability | ") == (
        f"| counterfact | reliability | {N} | – | {_fmt(stats.bootstrap(v('scale-recent-cf', 'counterfact/reliability')))} "
        f"| {_fmt(stats.bootstrap(three))} |")
    section = own.split(f"### {names[2]} - {names[1]} on their shared training tasks, paired")[1]
    d = stats.paired(three, v("scale-recent-cf", "counterfact/reliability")[None])
    assert f"| counterfact | reliability | {_fmt(d)} | {N} |" in section and "| recent |" not in section
    section = own.split(f"### {names[1]} - {names[0]} on their shared training tasks, paired")[1].split("###")[0]
    d = stats.paired(v("scale-recent-cf", "recent/reliability")[None], v("scale-recent", "recent/reliability")[None])
    assert f"| recent | reliability | {_fmt(d)} | {N} |" in section and "| counterfact |" not in section
    assert "mend-recent" not in text and "named instruction set" not in text  # instr-optimised has no ZsRE


def test_table1_each_single_task_editor_on_every_task(store, report):
    out, results = report
    text = (out / "tables" / "table1_cases.md").read_text()
    v = store.v
    assert _line(text, "| task | metric | n |") == ("| task | metric | n | Pre-edit | trained on counterfact | "
                                                     "trained on recent |")
    for task in ("counterfact", "recent", "zsre"):  # each editor on its own task and the ones it never saw
        pre = _fmt(stats.bootstrap(v("pre-edit", f"{task}/reliability"))) if task == "zsre" else "–"
        cells = [_fmt(stats.bootstrap(v(f"st-{t}", f"{task}/reliability"))) for t in ("counterfact", "recent")]
        assert _line(text, f"| {task} | reliability | ") == f"| {task} | reliability | {N} | {pre} | " + " | ".join(
            cells) + " |"
    assert "Evaluations: st-recent, st-counterfact." in text and (results / "table1_cases.md").read_text() == text
    # Table 3's single-task row: only the editor trained on the task shown; none trained on ZsRE
    table3 = (out / "tables" / "table3_cases.md").read_text()
    assert _line(table3, "| zsre | reliability | ").split(" | ")[-1] != "–"  # InstructEdit's cell
    assert f"{ST} has no editor trained on zsre, so its cells there are left empty" in table3
    column = _line(table3, "| task | metric | n |").split(" | ").index(ST)
    assert _line(table3, "| recent | reliability | ").split(" | ")[column] == _fmt(
        stats.bootstrap(v("st-recent", "recent/reliability")))
    # every single-task run has per-case results: no metric-based Table 1 beside it
    assert not (out / "tables" / "table1.md").exists()


def test_tables_are_written_published_and_on_the_page(report):
    out, results = report
    page = (out / "report.html").read_text()
    for name in ("seen_unseen_cases", "task_scaling_cases"):
        md = (out / "tables" / f"{name}.md").read_text()
        assert (results / f"{name}.md").read_text() == md  # --results-dir: the same Markdown
        assert (out / "tables" / f"{name}.html").exists()
    assert not list(results.glob("*.tmp")) and (results / "table3_cases.md").exists()
    assert "Seen vs unseen instructions from per-case results" in page and "Task scaling from per-case results" in page
    assert "held-out (unseen) ones" in page and "growing sets of tasks" in page  # the captions
    # Table 3 still keeps seen over unseen: the unseen evaluations are not among its rows
    table3 = (out / "tables" / "table3_cases.md").read_text()
    assert "unseen-s0" in table3.split("left out of Table 3")[1]


def test_experiment_without_such_runs_gets_notes(tmp_path, new_store):
    uri = new_store(tmp_path / "mlflow.db")
    path = tmp_path / "pre" / "cases.parquet"
    path.parent.mkdir()
    pd.DataFrame([{"case_id": f"z{i}", "task": "zsre", "instruction_setting": "seen", "reliability": 0.0}
                  for i in range(5)]).to_parquet(path)
    with tracking.run("bare", "eval-pre-edit", tags={"kind": "eval", "method": "Pre-edit", "mode": "pre-edit"},
                      tracking_uri=uri) as rid:
        pass
    tracking.log_artifact(path, "eval/test", run_id=rid)
    from analysis.report import build_report

    rep = build_report("bare", out_dir=tmp_path / "rep", tracking_uri=uri, log=False)
    assert "table3_cases" in rep.markdown
    assert not {"seen_unseen_cases", "task_scaling_cases"} & set(rep.markdown)
    assert not (tmp_path / "rep" / "tables" / "seen_unseen_cases.md").exists()
    assert any(n.startswith("seen_unseen_cases: no InstructEdit evaluation with unseen") for n in rep.notes)
    assert any(n.startswith("task_scaling_cases: needs InstructEdit editors") for n in rep.notes)
    assert any(n.startswith("table1_cases: no single-task editor") for n in rep.notes)
    assert "task_scaling_cases: needs" in rep.path.read_text()


def test_an_unseen_reevaluation_never_replaces_table3_cells():
    """A study trial tested (seen) on ZsRE + CounterFact, then its editor re-evaluated outside the
    study with unseen instructions on CounterFact only: Table 3 keeps the trial's seen cells of both
    tasks (choosing per row and row-level 'outside studies first' took the unseen run and lost ZsRE)."""
    from analysis import cases as cases_mod

    rows = [{"source": src, "method": "InstructEdit", "seed": "0", "task": task, "case_id": f"{task}{i}",
             "reliability": 1.0} for src, tasks in (("trial", ("zsre", "counterfact")), ("unseen", ("counterfact",)))
            for task in tasks for i in range(3)]
    runs = pd.DataFrame([
        {"run_id": "trial", "row": "InstructEdit", "method_tag": "InstructEdit", "study": "table3",
         "instruction_setting": "seen", "tasks": "counterfact,recent,convsent", "start_time": 1},
        {"run_id": "unseen", "row": "InstructEdit", "method_tag": "InstructEdit", "study": "",
         "instruction_setting": "unseen", "tasks": "counterfact,recent,convsent", "start_time": 2},
    ])
    kept, used = cases_mod.choose(pd.DataFrame(rows), runs)
    assert set(kept["source"]) == {"trial"} and sorted(kept["task"].unique()) == ["counterfact", "zsre"]
    assert list(used["used"]) == [True, False]
