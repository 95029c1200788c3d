import pandas as pd
import pytest

from analysis.runs import TIDY_COLUMNS, higher_is_better, load_runs, parse_metric_key, run_index, tidy


@pytest.mark.parametrize("key, expected", [
    ("test/counterfact/reliability", ("test", "counterfact", "reliability")),
    ("val/zsre/portability/reasoning", ("val", "zsre", "portability/reasoning")),
    ("test/avg/reliability", ("test", "avg", "reliability")),
    ("val/edit_success", ("val", "avg", "edit_success")),
    ("val/portability/reasoning", ("val", "avg", "portability/reasoning")),
    ("loss/total", ("", "", "loss/total")),
    ("train/edit_success", ("", "", "train/edit_success")),
    ("lr/edit_mean", ("", "", "lr/edit_mean")),
])
def test_parse_metric_key(key, expected):
    assert parse_metric_key(key) == expected


def test_lower_is_better_only_for_dd():
    assert not higher_is_better("dd") and higher_is_better("es") and higher_is_better("portability/reasoning")


def test_tidy_table_from_tracked_runs(store, tidy):
    _, _, ids = store
    assert list(tidy.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS
    row = tidy[(tidy["run_id"] == ids["instructedit"][1]) & (tidy["task"] == "zsre")
               & (tidy["metric"] == "reliability")]
    assert len(row) == 1
    r = row.iloc[0]
    assert (r["method"], r["mode"], r["kind"], r["split"], r["instruction_setting"]) == (
        "InstructEdit", "instructedit", "eval", "test", "unseen")
    assert r["run_name"] == "instructedit-unseen" and r["tasks"] == "counterfact,recent,convsent"
    assert r["n_train_tasks"] == 3 and 0.6 < r["value"] < 0.8
    # slash inside the metric name, validation and training metrics
    assert (tidy["metric"] == "portability/reasoning").any()
    val = tidy[(tidy["split"] == "val") & (tidy["run_name"] == "mend-recent")]
    assert set(val["task"]) == {"recent", "avg"}
    train = tidy[(tidy["split"] == "") & (tidy["run_name"] == "mend-recent")]
    assert {"loss/total", "train/edit_success"} <= set(train["metric"])


def test_interval_keys_fill_columns_of_their_metric(store, tidy):
    _, _, ids = store
    assert not tidy["metric"].str.endswith(("_ci_low", "_ci_high", "_n")).any()
    r = tidy[(tidy["run_id"] == ids["instructedit"][0]) & (tidy["task"] == "zsre")
             & (tidy["metric"] == "reliability")].iloc[0]
    assert r["ci_low"] < r["value"] < r["ci_high"] and r["n"] == 64
    ftl = tidy[(tidy["run_id"] == ids["ftl"][0]) & (tidy["split"] == "test")]
    assert len(ftl) and ftl[["ci_low", "ci_high", "n"]].isna().all().all()  # logged means only
    assert (tidy["metric"] == "reliability_instructed").any()


def test_interval_key():
    from analysis.runs import interval_key

    assert interval_key("test/zsre/reliability_ci_low") == ("test/zsre/reliability", "ci_low")
    assert interval_key("test/avg/portability/reasoning_n") == ("test/avg/portability/reasoning", "n")
    assert interval_key("test/zsre/reliability") is None and interval_key("train/steps_n") is None


def test_run_index_carries_provenance_tags(store):
    from analysis.runs import run_index

    uri, exp, ids = store
    idx = run_index(exp, uri).set_index("run_id")
    train = idx.loc[ids["train"][-1]]
    assert (train["best_step"], train["seed"], train["train_edits"], train["model"]) == ("20", "0", "240", "tiny-llama")
    assert train["command"].startswith("instructedit train") and len(train["git_commit"]) >= 7
    assert idx.loc[ids["instructedit"][0], "editor_run"] == ids["train"][-1]


def test_metric_histories(store):
    from analysis.runs import metric_histories

    uri, _, ids = store
    h = metric_histories(ids["train"][:1], tracking_uri=uri)
    assert set(h.columns) == {"run_id", "key", "step", "value"}
    score = h[h["key"] == "val/score"].sort_values("step")
    assert list(score["step"]) == [10, 20, 30] and score["value"].idxmax() == score.index[1]
    assert (h["key"] == "loss/total").sum() == 7 and not h["key"].str.startswith("train/").any()


def test_trial_params_and_study_tags_are_columns(tidy):
    trials = tidy[tidy["study"] == "task_scaling"]
    assert set(trials["n_train_tasks"]) == {1, 2, 3}
    assert "params.data.tasks" in tidy.columns and "params.train.batch_size" in tidy.columns
    bal = tidy[tidy["study"] == "convsent_balance"].drop_duplicates("run_id")
    assert sorted(bal["balance"]) == ["balanced", "full"]


def test_balance_from_param_when_no_tag():
    runs = pd.DataFrame({"run_id": ["a", "b"], "tags.kind": ["trial", "trial"],
                         "params.tasks.convsent.balance_to": ["1427", "None"],
                         "metrics.test/convsent/es": [0.8, 0.9]})
    t = tidy(runs)
    assert dict(zip(t["run_id"], t["balance"])) == {"a": "balanced", "b": "full"}


def test_report_runs_excluded_and_unknown_experiment_is_empty(store):
    uri, exp, _ = store
    assert run_index(exp, uri)["kind"].isin(["report"]).sum() == 0
    empty = load_runs("no-such-experiment", tracking_uri=uri)
    assert empty.empty and list(empty.columns[: len(TIDY_COLUMNS)]) == TIDY_COLUMNS


def test_metric_roots_and_direction_come_from_the_registry():
    from instructedit.evaluate.metrics import METRICS

    from analysis.runs import LOWER_IS_BETTER, METRIC_ROOTS

    assert {"reliability", "portability", "es", "dd", "edit_success", "reliability_instructed"} <= METRIC_ROOTS
    assert all(m.split("/")[0] in METRIC_ROOTS for m in METRICS)
    assert LOWER_IS_BETTER == {"dd"}
    # an instructed average is an average, not a task named "reliability_instructed"
    assert parse_metric_key("val/reliability_instructed") == ("val", "avg", "reliability_instructed")
    assert not higher_is_better("dd/other_topics")  # a breakdown the registry does not list
