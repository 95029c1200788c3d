import pandas as pd
import synthetic_runs

from analysis import figures

PNG = b"\x89PNG\r\n\x1a\n"


def _png_ok(path):
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 5000


def test_figures_from_tracked_runs(tidy, tmp_path):
    for name, (_, make) in figures.ALL.items():
        fig = make(tidy)
        assert fig is not None, name
        assert _png_ok(figures.save(fig, tmp_path / f"{name}.png")), name


def test_task_scaling_data_follows_the_study(tidy):
    d = figures.task_scaling_data(tidy)
    z = d[(d["task"] == "zsre") & (d["metric"] == "reliability")].sort_values("n_train_tasks")
    assert list(z["n_train_tasks"]) == [1, 2, 3]
    assert z["value"].is_monotonic_increasing
    assert list(d.loc[d["n_train_tasks"] == 1, "train_tasks"].unique()) == ["recent"]


def test_seen_unseen_and_balance_data(tidy):
    s = figures.instruction_data(tidy)
    assert {"seen", "unseen"} <= set(s.columns) and "zsre/reliability" in s.index
    assert abs(s.loc["zsre/reliability", "seen"] - 0.75) < 0.03  # the eval run, not study trials
    b = figures.balance_data(tidy)
    assert {"balanced", "full"} <= set(b.columns) and "convsent/es" in b.index


def test_no_data_gives_no_figure(tidy):
    empty = tidy.iloc[0:0]
    for _, make in figures.ALL.values():
        assert make(empty) is None
    assert figures.gradient_pca({}) is None
    assert figures.task_bars(empty) is None and figures.instructed_vs_plain(empty) is None
    assert figures.training_curves(pd.DataFrame(columns=["run_id", "key", "step", "value"]), empty) is None


def test_cell_data_intervals_and_n(tidy):
    d = figures.cell_data(tidy).set_index(["method", "task", "metric"])
    ie = d.loc[("InstructEdit", "zsre", "reliability")]
    assert ie["has_ci"] and ie["ci_low"] < ie["value"] < ie["ci_high"] and ie["n"] == 64 and ie["n_runs"] == 1
    assert abs(ie["value"] - 0.75) < 0.03  # the seen-instruction eval run, as in Table 3
    assert not d.loc[("FT-L", "zsre", "reliability"), "has_ci"]  # FT-L logged means only
    # ConvSent's headline is es; three single-task editors on zsre: no single interval, same n
    assert ("InstructEdit", "convsent", "es") in d.index
    assert not d.loc[("MEND (single-task)", "zsre", "reliability"), "has_ci"]
    assert d.loc[("MEND (single-task)", "zsre", "reliability"), "n"] == 64


def test_task_bars_and_instructed_figures(tidy, tmp_path):
    fig = figures.task_bars(tidy)
    assert _png_ok(figures.save(fig, tmp_path / "bars.png"))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["counterfact: n=64 per method", "recent: n=64 per method", "convsent: n=64 per method",
                      "zsre (hold-out): n=64 per method"]
    ax = fig.axes[0]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 4  # FT-L's four counterfact bars: no interval logged
    assert len(ax.containers) > len(ax.patches)  # bars plus an error bar per bar with an interval
    d = figures.instructed_data(tidy)
    assert set(d["probe"]) == {"plain", "instructed"} and set(d.loc[d["task"] == "convsent", "metric"]) == {
        "es", "es_instructed"}
    assert _png_ok(figures.save(figures.instructed_vs_plain(tidy), tmp_path / "instr.png"))


def test_training_curves_mark_the_selected_step(store, tmp_path):
    from analysis.runs import metric_histories, run_index

    uri, exp, ids = store
    runs = run_index(exp, uri)
    runs = runs[runs["kind"] == "train"]
    hist = metric_histories(runs["run_id"], tracking_uri=uri)
    fig = figures.training_curves(hist, runs)
    assert _png_ok(figures.save(fig, tmp_path / "curves.png"))
    assert len(fig.axes) == 2 * len(runs)
    val_ax = fig.axes[1]
    assert any(line.get_xdata()[0] == 20 and line.get_linestyle() == ":" for line in val_ax.get_lines())
    assert any("step 20" in t.get_text() for t in val_ax.get_legend().get_texts())
    # without a best_step tag the argmax of val/score is marked, and said so
    step, why = figures.best_step_of({"best_step": ""}, hist[hist["run_id"] == ids["train"][0]])
    assert step == 20 and "no best_step tag" in why


def test_gradient_pca_figure(tmp_path):
    groups = {
        "InstructEdit": synthetic_runs.gradient_clusters(20, 128, seed=0),
        "MEND (multi-task)": synthetic_runs.gradient_clusters(20, 128, seed=1, spread=0.5),
    }
    fig = figures.gradient_pca(groups, n_components=6)
    assert _png_ok(figures.save(fig, tmp_path / "pca.png"))
    assert len(fig.axes) == 4


def test_bar_metrics_are_headline_percent_metrics_of_the_registry():
    from instructedit.evaluate.metrics import DEFAULT_SCALE, METRICS

    for m in figures.BAR_METRICS:
        assert METRICS[m].headline and METRICS[m].in_tables and METRICS[m].scale == DEFAULT_SCALE
