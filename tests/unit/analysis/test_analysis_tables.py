import pandas as pd

from analysis.tables import METHODS, table1, table3


def test_table3_shape_and_best(tidy, tmp_path):
    t = table3(tidy)
    # registry order; the synthetic runs have no ROME/MEMIT/AlphaEdit rows
    assert list(t.values.index) == [m for m in METHODS if m in set(tidy["method"])]
    assert list(t.values.index) == ["Pre-edit", "FT-L", "MEND (single-task)", "MEND (multi-task)", "InstructEdit"]
    tasks = list(dict.fromkeys(t.values.columns.get_level_values(0)))
    assert tasks == ["counterfact", "recent", "convsent", "zsre"]  # hold-out last
    assert ("convsent", "es") in t.values.columns and ("convsent", "dd") in t.values.columns
    assert ("counterfact", "portability/reasoning") not in t.values.columns
    best = t.best()
    assert best.loc["InstructEdit", ("counterfact", "reliability")]
    assert best.loc["InstructEdit", ("zsre", "reliability")]
    # dd is lower-is-better; the baseline (Pre-edit) is never marked
    dd = t.values[("convsent", "dd")].drop("Pre-edit")
    assert best.loc[dd.idxmin(), ("convsent", "dd")] and best[("convsent", "dd")].sum() == 1
    assert not best.loc["Pre-edit"].any()
    # MEND (single-task) uses the editor trained on that very task: 0.8-level, not the 0.15 off-task ones
    assert t.values.loc["MEND (single-task)", ("recent", "reliability")] > 0.7
    # InstructEdit uses the seen-instruction eval run, not unseen ones nor study trials
    assert abs(t.values.loc["InstructEdit", ("zsre", "reliability")] - 0.75) < 0.03

    md = t.to_markdown()
    v = t.values.loc["InstructEdit", ("counterfact", "reliability")] * 100
    assert f"**{v:.0f}**" in md  # n = 64 cases: whole percents
    assert "counterfact/reliability" in md.splitlines()[2]
    csv = t.to_csv()
    assert f"{v:.0f}*" in csv and csv.splitlines()[0].startswith("Method,counterfact/reliability")
    html = t.to_html()
    assert f"<b>{v:.0f}</b>" in html and "zsre (hold-out)" in html
    # the run's own 95% interval and n under the value; none for FT-L, which logged means only
    iv = t.intervals[("InstructEdit", "counterfact", "reliability")]
    lo, hi = iv["ci_low"] * 100, iv["ci_high"] * 100
    assert iv["n"] == 64 and f'<span class="ci">{lo:.0f}–{hi:.0f}, n=64</span>' in html
    assert t.interval_text("FT-L", ("counterfact", "reliability")) == ""
    # plain metrics first, their instructed variants after, per task
    cf = [m for task, m in t.values.columns if task == "counterfact"]
    assert cf.index("reliability_instructed") > max(cf.index(m) for m in ("reliability", "locality", "portability"))
    assert "reliability (instr.)" in html
    paths = t.save(tmp_path, "table3")
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_table1_single_task_transfer(tidy):
    t = table1(tidy)
    assert list(t.values.index) == ["trained on counterfact", "trained on recent", "trained on convsent"]
    best = t.best()
    assert best.loc["trained on counterfact", ("counterfact", "reliability")]
    assert best.loc["trained on recent", ("recent", "reliability")]
    assert best.loc["trained on convsent", ("convsent", "es")]
    assert t.values.loc["trained on recent", ("counterfact", "reliability")] < 0.3
    assert "zsre" in t.values.columns.get_level_values(0)


def test_tables_without_runs_are_empty_not_errors(tidy):
    none = tidy.iloc[0:0]
    for make in (table1, table3):
        t = make(none)
        assert t.empty
        assert isinstance(t.to_markdown(), str) and isinstance(t.to_html(), str)
    only_train = tidy[tidy["split"] != "test"]
    assert table3(only_train).empty


def test_formatting_rounds_to_n():
    from analysis.tables import Table

    cols = pd.MultiIndex.from_tuples([("t", "reliability"), ("t", "dd")])
    t = Table("x", pd.DataFrame([[0.123456, 0.5], [0.5, 0.1]], index=["A", "B"], columns=cols),
              intervals={("A", "t", "reliability"): {"ci_low": 0.1, "ci_high": 0.15, "n": 4000}})
    f = t.formatted()
    assert f.loc["A", ("t", "reliability")] == "12.3" and f.loc["B", ("t", "reliability")] == "50"
    assert f.loc["B", ("t", "dd")] == "0.10"  # no n: the coarse rule
    assert t.interval_text("A", ("t", "reliability")) == "10.0–15.0, n=4000"
    assert t.best().loc["B", ("t", "reliability")] and t.best().loc["B", ("t", "dd")]


def test_reduced_tidy_frame_gives_the_same_table(tidy):
    # evaluate/tables.py builds a tidy frame from eval folders with fewer columns
    cols = ["run_id", "kind", "method", "mode", "tasks", "study", "instruction_setting", "split", "task",
            "metric", "value"]
    assert table3(tidy[cols]).values.equals(table3(tidy).values)
    assert table1(tidy[cols]).values.equals(table1(tidy).values)


def test_table_metrics_and_hold_out_come_from_the_registries():
    from instructedit.config import task_names
    from instructedit.evaluate.metrics import METRICS, order

    from analysis import tables

    # every table metric of the metric registry, in its order: plain (headline) first, instructed after
    assert tables.METRICS == tuple(order(m for m in METRICS if METRICS[m].in_tables))
    assert {"reliability", "es", "dd", "reliability_instructed"} <= set(tables.METRICS)
    assert "portability/reasoning" not in tables.METRICS and "edit_success" not in tables.METRICS
    first_instructed = min(i for i, m in enumerate(tables.METRICS) if not METRICS[m].headline)
    assert tables.PLAIN_METRICS == tables.METRICS[:first_instructed]
    assert tables.Table("x", pd.DataFrame()).hold_out == tuple(task_names(hold_out=True)) == ("zsre",)
    assert tables.order_tasks(["zsre", "other", "convsent", "counterfact-mend", "recent", "counterfact"]) == [
        "counterfact", "recent", "convsent", "counterfact-mend", "other", "zsre"]
