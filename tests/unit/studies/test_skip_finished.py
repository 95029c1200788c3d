"""`instructedit study NAME --skip-finished`: which grid points an MLflow store says are done.

Trial runs are written into a sqlite store in tmp_path the way a trial records itself (trial.py:
flattened trial config as params, `search.<key>` params, trial tags with bundle labels, test
metrics); no Ray runs here."""

from pathlib import Path

import pytest
import yaml
from instructedit import cli, tracking
from instructedit.config import flatten, to_dict
from instructedit.studies.finished import (
    RecordedTrial,
    grid_points,
    recorded_trials,
    remaining_points,
    skip_error,
    skip_finished,
)
from instructedit.studies.spec import load_study
from instructedit.studies.trial import trial_tags

TABLE3_ORDER = [("instructedit", 0), ("multi-task", 0), ("instructedit", 1), ("multi-task", 1),
                ("instructedit", 2), ("multi-task", 2)]
TESTED = {"test/zsre/reliability": 0.5, "test/counterfact/reliability": 0.6, "test/avg/reliability": 0.55}


@pytest.fixture(autouse=True)
def no_instruction_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTEDIT_INSTRUCTION_SETS", str(tmp_path / "sets"))


@pytest.fixture(scope="module")
def uri(tmp_path_factory, new_store) -> str:
    """One store for the module (creating a sqlite store takes seconds); every test reads and writes
    its own experiment."""
    return new_store(tmp_path_factory.mktemp("mlruns") / "mlflow.db")


@pytest.fixture
def experiment(request) -> str:
    return f"exp-{request.node.name}"


def table3(experiment: str, overrides: dict | None = None):
    return load_study("table3", {**(overrides or {}), "study.experiment": experiment})


def log_trial(uri: str, spec, point: dict, *, status: str = "FINISHED", metrics: dict | None = None,
              search_params: bool = True, params: dict | None = None, tags: dict | None = None) -> str:
    """A trial's MLflow run as trial.py leaves it; `status` FAILED/KILLED/RUNNING for the others."""
    cfg = spec.trial_config(point)
    all_params = {**flatten(to_dict(cfg)), **(params or {})}
    if search_params:  # trial.py logs them when its test starts
        all_params.update({f"search.{k}": v for k, v in spec.labels(point).items()})
    # train_run's own tags first, then the trial's (the table3 bundle `arm` among them).
    all_tags = {"kind": "trial", "mode": cfg.mode, "method": "display name", "seed": str(cfg.train.seed),
                **trial_tags(spec, point, "t0001", "trial_t0001"), **(tags or {})}
    try:
        with tracking.run(spec.experiment, "trial", params=all_params, tags=all_tags,
                          tracking_uri=uri) as run_id:
            tracking.log_metrics({"val/score": 0.4, **(metrics or {})})
            if status == "FAILED":
                raise RuntimeError("the trial failed")
    except RuntimeError:
        pass
    if status in ("KILLED", "RUNNING"):
        tracking.set_terminated(run_id, status, uri)
    return run_id


def table3_point(method: str, seed: int) -> dict:
    return {"arm": method, "train.seed": seed}


def as_pairs(points: list[dict]) -> list[tuple]:
    return [(p["arm"], p["train.seed"]) for p in points]


def small_study(tmp_path: Path, trials: int = 1, **extra) -> Path:
    """Two grid parameters, one of lists; its experiment is the test's own (tmp_path's name)."""
    doc = {"overrides": {"model": "tiny-llama", "data.on_error": "skip"},
           "space": {"data.tasks": {"grid": [["recent"], ["recent", "counterfact"]]},
                     "train.seed": {"grid": [0, 1]}},
           "trials": trials, "experiment": f"small-{tmp_path.name}", **extra}
    p = tmp_path / "small.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


# ------------------------------------------------------------------------------------------ table3
def test_an_empty_store_leaves_the_whole_table3_grid_in_tunes_order(uri, experiment):
    spec = table3(experiment)
    left = skip_finished(spec, tracking_uri=uri)
    assert as_pairs(left.points) == TABLE3_ORDER  # the first parameter varies fastest, as in Tune
    assert left.done == [] and left.notes == [] and left.total == 6
    assert left.experiment == experiment and left.tracking_uri == uri
    assert recorded_trials("table3", experiment, uri) == []  # no experiment yet: nothing, no error


def test_only_finished_and_tested_trials_of_the_same_study_are_skipped(uri, experiment):
    spec = table3(experiment)
    done = log_trial(uri, spec, table3_point("instructedit", 0), metrics=TESTED)
    log_trial(uri, spec, table3_point("multi-task", 0), status="FAILED")
    log_trial(uri, spec, table3_point("instructedit", 1), status="RUNNING", metrics=TESTED)  # a lost session
    untested = log_trial(uri, spec, table3_point("multi-task", 1))  # trained, lost before its test
    log_trial(uri, spec, table3_point("instructedit", 2), status="KILLED", metrics=TESTED)
    # The same point in another study, and a plain training run, do not count either.
    log_trial(uri, spec, table3_point("multi-task", 2), metrics=TESTED, tags={"study": "table3-single"})
    log_trial(uri, spec, table3_point("multi-task", 2), metrics=TESTED, tags={"kind": "train"})

    left = skip_finished(spec, tracking_uri=uri)
    assert as_pairs(left.points) == TABLE3_ORDER[1:]
    assert [(as_pairs([p]), ids) for p, ids in left.done] == [([("instructedit", 0)], [done])]
    assert len(left.notes) == 1 and untested in left.notes[0] and "without test metrics" in left.notes[0]


def test_a_trial_of_an_earlier_narrowed_invocation_counts_for_the_full_grid(uri, experiment):
    # The one-trial-per-session workaround: the grid cut down to one point with --set study.space...
    narrowed = table3(experiment, {
        "study.space.train.seed": {"grid": [1]},
        "study.space.arm": {"grid": {"multi-task": {"mode": "multi-task", "data.instruction_setting": "none"}}},
    })
    run_id = log_trial(uri, narrowed, table3_point("multi-task", 1), metrics=TESTED)
    spec = table3(experiment)
    left = skip_finished(spec, tracking_uri=uri)
    assert ("multi-task", 1) not in as_pairs(left.points) and len(left.points) == 5
    assert left.done == [(table3_point("multi-task", 1), [run_id])]


def test_matching_reads_the_trained_config_when_search_params_are_missing(uri, experiment):
    spec = table3(experiment)
    # No search.* params: the bundle label comes from its tag, the seed from the config param.
    run_id = log_trial(uri, spec, table3_point("multi-task", 2), metrics=TESTED, search_params=False)
    left = skip_finished(spec, tracking_uri=uri)
    assert left.done == [(table3_point("multi-task", 2), [run_id])]


def test_a_bundle_label_with_other_contents_is_not_counted(uri, experiment):
    spec = table3(experiment)
    run_id = log_trial(uri, spec, table3_point("instructedit", 0), metrics=TESTED,
                       params={"mode": "multi-task"})
    left = skip_finished(spec, tracking_uri=uri)
    assert len(left.points) == 6 and left.done == []
    assert len(left.notes) == 1 and run_id in left.notes[0] and "mode" in left.notes[0]


def test_a_run_missing_a_test_task_of_the_study_is_not_counted(uri, experiment):
    spec = table3(experiment)  # tested on zsre + the training tasks
    log_trial(uri, spec, table3_point("instructedit", 0), metrics={"test/counterfact/reliability": 0.6})
    left = skip_finished(spec, tracking_uri=uri)
    assert len(left.points) == 6 and "['zsre']" in left.notes[0]


def test_every_table3_trial_done_leaves_nothing(uri, experiment):
    spec = table3(experiment)
    for method, seed in TABLE3_ORDER:
        log_trial(uri, spec, table3_point(method, seed), metrics=TESTED)
    left = skip_finished(spec, tracking_uri=uri)
    assert left.points == [] and len(left.done) == 6


# ------------------------------------------------------------------------------------- small spec
def test_list_values_and_repeats(tmp_path, uri):
    spec = load_study(small_study(tmp_path, trials=2))
    grid = grid_points(spec)
    assert grid == [{"data.tasks": '["recent"]', "train.seed": 0},
                    {"data.tasks": '["recent","counterfact"]', "train.seed": 0},
                    {"data.tasks": '["recent"]', "train.seed": 1},
                    {"data.tasks": '["recent","counterfact"]', "train.seed": 1}]
    tested = {"test/zsre/reliability": 0.3, "test/recent/reliability": 0.7}
    once = log_trial(uri, spec, grid[1], metrics=tested)
    twice = [log_trial(uri, spec, grid[2], metrics=tested), log_trial(uri, spec, grid[2], metrics=tested)]
    # Tested, but not on the study's test task zsre (say an earlier --set study.test.tasks=[]).
    log_trial(uri, spec, grid[3], metrics={"test/recent/reliability": 0.7})

    left = skip_finished(spec, tracking_uri=uri)
    # Pass 1: every point finished fewer than once; pass 2: fewer than twice.
    assert left.points == [grid[0], grid[3], grid[0], grid[1], grid[3]] and left.total == 8
    assert left.done == [(grid[1], [once]), (grid[2], twice)]
    # --trials 1 for this invocation: a point done once is done.
    assert skip_finished(spec, tracking_uri=uri, trials=1).points == [grid[0], grid[3]]


def test_pure_matching_on_recorded_strings(tmp_path):
    """The same decision from hand-written records: lists as Python's str() in the config param,
    numbers as strings, and a list given in another order is another point."""
    spec = load_study(small_study(tmp_path))

    def rec(run_id, tasks, seed, status="FINISHED", study=None):
        return RecordedTrial(run_id, status, {"kind": "trial", "study": study or spec.name},
                             {"data.tasks": tasks, "train.seed": seed}, frozenset({"test/zsre/reliability"}))

    runs = [rec("a", "['recent', 'counterfact']", "1"), rec("b", "('recent',)", "0"),
            rec("c", "['counterfact', 'recent']", "0"), rec("d", "['recent']", "1", status="FAILED"),
            rec("e", "['recent']", "1", study="other")]
    left = remaining_points(spec, runs)
    assert left.done == [({"data.tasks": '["recent"]', "train.seed": 0}, ["b"]),
                         ({"data.tasks": '["recent","counterfact"]', "train.seed": 1}, ["a"])]
    assert left.points == [{"data.tasks": '["recent","counterfact"]', "train.seed": 0},
                           {"data.tasks": '["recent"]', "train.seed": 1}]


# ------------------------------------------------------------------------------ refusals and CLI
def test_only_grids_without_resume_can_skip(tmp_path):
    assert skip_error(load_study("table3")) == ""
    assert "optuna" in skip_error(load_study("hparams"))
    assert "--resume" in skip_error(load_study("table3"), resume=True)
    sampled = load_study(small_study(tmp_path, searcher="random",
                                     space={"editor.lr": {"loguniform": [1.0e-5, 1.0e-3]}}))
    assert "editor.lr (loguniform)" in skip_error(sampled)


@pytest.mark.parametrize("argv, says", [
    (["study", "hparams", "--skip-finished"], "optuna"),
    (["study", "table3", "--skip-finished", "--resume"], "--resume"),
])
def test_the_cli_refuses_optuna_and_resume_in_one_line(argv, says, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err and err.startswith("instructedit study: --skip-finished")


def test_the_cli_exits_0_when_nothing_is_left(tmp_path, uri, capsys):
    path = small_study(tmp_path)
    spec = load_study(path)
    ids = [log_trial(uri, spec, point, metrics={"test/zsre/reliability": 0.3}) for point in grid_points(spec)]
    rc = cli.main(["study", str(path), "--skip-finished", "--tracking-uri", uri, "--storage", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert rc == 0 and "nothing left to run" in out
    skips = [line for line in out.splitlines() if " skip " in line]
    assert len(skips) == 4 and all(any(i in line for i in ids) for line in skips)
    assert "skip data.tasks=recent,counterfact train.seed=1: finished in MLflow run" in out
    assert not (tmp_path / "s").exists()  # no study folder, no Ray


def test_the_cli_hands_the_points_left_to_the_runner(tmp_path, uri, capsys, monkeypatch):
    from instructedit import ray_session
    from instructedit.studies import runner

    path = small_study(tmp_path)
    spec = load_study(path)
    grid = grid_points(spec)
    log_trial(uri, spec, grid[0], metrics={"test/zsre/reliability": 0.3})
    seen = {}

    def fake_run_study(spec, **kw):  # stands in for Ray: records what it was asked, then stops
        seen.update(kw)
        raise FileExistsError("stopped by the test")

    monkeypatch.setattr(runner, "run_study", fake_run_study)
    monkeypatch.setattr(ray_session, "setup_logging", lambda *a, **k: None)
    rc = cli.main(["study", str(path), "--skip-finished", "--tracking-uri", uri, "--stop-after", "1"])
    assert rc == 2  # the fake's FileExistsError
    assert seen["points"] == grid[1:] and seen["stop_after"] == 1 and not seen["resume"]
    assert "3 of 4 trials left" in capsys.readouterr().out


def test_tune_runs_exactly_the_points_left(tmp_path):
    """The point-index space resolves to the points, repeats included (Tune's variant generator
    only; no Ray is started)."""
    from instructedit.studies.runner import expected_trials, param_space
    from ray.tune.search.variant_generator import generate_variants

    spec = load_study(small_study(tmp_path))
    grid = grid_points(spec)
    points = [grid[3], grid[0], grid[3]]
    configs = [cfg for _, cfg in generate_variants(param_space(spec, points))]
    assert [{k: c[k] for k in ("data.tasks", "train.seed")} for c in configs] == points
    assert expected_trials(spec, points) == 3 and expected_trials(spec) == 4
    assert spec.labels(configs[0]) == {"data.tasks": "recent,counterfact", "train.seed": "1"}


@pytest.mark.parametrize("stop_after, rc, says", [
    (["--stop-after", "1"], 0, "study paused by --stop-after 1: 2 trial(s) left; continue with"),
    ([], 130, "study interrupted: continue with"),
])
def test_a_paused_study_is_not_called_interrupted(tmp_path, monkeypatch, capsys, stop_after, rc, says):
    """--stop-after ends a study on purpose (exit 0, "paused"); anything else that leaves trials
    to run (Ctrl+C, a lost machine) is an interruption (exit 130). Trials left count the pending one
    and the one Tune has not created yet (expected 3)."""
    from instructedit import ray_session
    from instructedit.studies import runner

    trials = [runner.TrialRow(trial_id="t0", trial_name="t0", status="done", params={}, metrics={"val/score": 0.5}),
              runner.TrialRow(trial_id="t1", trial_name="t1", status="pending", params={}, metrics={})]
    outcome = runner.StudyOutcome(name="smoke", study_dir=tmp_path, parent_run_id="p", tracking_uri="u",
                                  experiment="e", metric="val/score", mode="max", trials=trials, best=None,
                                  best_config=None, summary_path=tmp_path / "summary.csv", finished=False,
                                  elapsed_s=1.0, expected=3)
    monkeypatch.setattr(runner, "run_study", lambda spec, **kw: outcome)
    monkeypatch.setattr(ray_session, "setup_logging", lambda *a, **k: None)
    assert cli.main(["study", "smoke", "--storage", str(tmp_path / "s"), *stop_after]) == rc
    out = capsys.readouterr().out
    assert says in out and ("interrupted" in out) == (rc == 130)


def test_trials_left_count_those_tune_has_not_created(tmp_path):
    from instructedit.studies.runner import StudyOutcome, TrialRow

    def outcome(statuses, expected):
        rows = [TrialRow(trial_id=f"t{i}", trial_name="", status=s, params={}, metrics={}) for i, s in enumerate(statuses)]
        return StudyOutcome("s", tmp_path, "", "", "", "val/score", "max", rows, None, None, tmp_path, False, 0.0, expected)

    assert outcome(["done"], 3).left == 2  # --stop-after 1 of a 3-point grid: Tune made one trial
    assert outcome(["done", "failed", "stopped"], 3).left == 0
    assert outcome(["done", "pending", "pending"], 3).left == 2
    assert outcome(["pending"], 0).left == 1  # expected unknown: the pending rows
