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


def test_gradient_pca_figure(tmp_path):
    groups = {
        "InstructEdit": synthetic_runs.gradient_clusters(20, 128, seed=0),
        "MEND (multi-task)": synthetic_runs.gradient_clusters(20, 128, seed=1, spread=0.5),
    }
    fig = figures.gradient_pca(groups, n_components=6)
    assert _png_ok(figures.save(fig, tmp_path / "pca.png"))
    assert len(fig.axes) == 4
