"""Comparison of evaluation folders: seeds become one row, differences are paired."""

import json

import numpy as np
import pandas as pd
import pytest
from instructedit.evaluate import compare, stats


def _write(root, name, method, seed, rel, task="zsre"):
    d = root / name
    d.mkdir(parents=True)
    rows = [{"case_id": f"c{i}", "task": task, "instruction_setting": "seen", "reliability": float(v),
             "reliability_instructed": 1.0} for i, v in enumerate(rel)]
    pd.DataFrame(rows).to_parquet(d / "cases.parquet")
    (d / "run.json").write_text(json.dumps({"run_id": "", "tags": {"method": method, "seed": str(seed)}}))


def test_seeds_are_one_row_and_differences_are_paired(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random(60) < 0.5).astype(float)
    _write(tmp_path, "mt", "MEND (multi-task)", 0, base)
    gain = base.copy()
    gain[base == 0][:10] = 1.0
    flip = np.where(base == 0)[0][:12]
    s0, s1 = base.copy(), base.copy()
    s0[flip] = 1.0
    s1[flip[:6]] = 1.0
    _write(tmp_path, "ie0", "InstructEdit", 0, s0)
    _write(tmp_path, "ie1", "InstructEdit", 1, s1)
    df = compare.read_cases(tmp_path)
    c = compare.cell(df, "InstructEdit", "zsre", "reliability")
    assert c.seeds == 2 and c.est.n == 60
    assert c.est.mean == pytest.approx((s0.mean() + s1.mean()) / 2)
    d = compare.paired_difference(df, "InstructEdit", "MEND (multi-task)", "zsre", "reliability")
    assert d.mean == pytest.approx(9 / 60) and d.n == 60
    assert d.ci_low > 0  # every case moved up or stayed: a paired interval excludes zero
    unpaired = stats.bootstrap(s0).ci_high - stats.bootstrap(s0).ci_low
    assert d.ci_high - d.ci_low < unpaired
    table = compare.interval_table(df, ["reliability", "reliability_instructed"])
    assert "InstructEdit (2 seeds)" in table and "zsre reliability (n=60)" in table
    assert table.index("zsre reliability (n=60)") < table.index("reliability_instructed")
    assert "MEND (multi-task)" in compare.difference_table(df, "InstructEdit", "MEND (multi-task)", ["reliability"])


def test_long_table_rows_per_task_and_metric(tmp_path):
    _write(tmp_path, "pre", "Pre-edit", 0, [0.0, 1.0, 0.0, 0.0])
    _write(tmp_path, "ie", "InstructEdit", 0, [1.0, 1.0, 1.0, 0.0])
    text = compare.long_table(compare.read_cases(tmp_path), ["reliability", "reliability_instructed"])
    lines = text.splitlines()
    assert lines[0] == "| task | metric | n | Pre-edit | InstructEdit |"
    # the one rounding rule (metrics.format_estimate): 4 cases support whole percents only
    assert lines[2] == "| zsre | reliability | 4 | 25 [0, 75] | 75 [25, 100] |"
    assert lines[3].startswith("| zsre | reliability_instructed | 4 |")


def test_cells_of_a_task_use_the_cases_every_method_shares(tmp_path):
    # A: 10 cases (the last 6 all right); B: the first 4 only; C: none of zsre (another task).
    _write(tmp_path, "a", "Pre-edit", 0, [0.0, 1.0, 0.0, 0.0] + [1.0] * 6)
    _write(tmp_path, "b", "InstructEdit", 0, [1.0, 1.0, 1.0, 0.0])
    _write(tmp_path, "c", "FT-L", 0, [1.0, 1.0], task="counterfact")
    df = compare.read_cases(tmp_path)
    common = compare.common_cases(df, "zsre", ["Pre-edit", "FT-L", "InstructEdit"])
    assert common.case_ids == ["c0", "c1", "c2", "c3"] and common.total == 10 and common.dropped == 6
    lines = compare.long_table(df, ["reliability"]).splitlines()
    assert lines[0] == "| task | metric | n | Pre-edit | FT-L | InstructEdit |"
    # Pre-edit on its first 4 cases (25), not on all 10 (70); FT-L has no ZsRE case: "–"
    assert lines[3] == "| zsre | reliability | 4 | 25 [0, 75] | – | 75 [25, 100] |"
    assert lines[2].startswith("| counterfact | reliability | 2 | – | 100 [100, 100] | – |")
    assert lines[-1].endswith("cases dropped for lack of overlap: zsre 6 of 10.")
    table = compare.interval_table(df, ["reliability"])
    assert "zsre reliability (n=4)" in table and "| Pre-edit | – | 25 [0, 75] |" in table
    assert table.splitlines()[-1].endswith("zsre 6 of 10.")
    # the same cases for all: no note
    assert "dropped" not in compare.long_table(df[df["task"] == "counterfact"], ["reliability"])


def test_a_metric_the_task_lacks_is_no_row_and_no_warning(recwarn):
    """generalization exists for zsre only: counterfact gets no difference row, and numpy warns of
    no empty mean (a wall of RuntimeWarnings hid the table before)."""
    import warnings

    import pandas as pd
    from instructedit.evaluate import compare

    rows = []
    for method in ("InstructEdit", "Pre-edit"):
        for i in range(4):
            rows.append({"method": method, "seed": "", "task": "counterfact", "case_id": f"c{i}",
                         "reliability": float(method == "InstructEdit"), "generalization": float("nan")})
            rows.append({"method": method, "seed": "", "task": "zsre", "case_id": f"z{i}",
                         "reliability": 0.5, "generalization": 1.0})
    df = pd.DataFrame(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = compare.difference_table(df, "InstructEdit", "Pre-edit", ["reliability", "generalization"])
    assert "| counterfact | generalization |" not in text and "| zsre | generalization |" in text
    assert "| counterfact | reliability |" in text


def test_tasks_follow_the_task_registry_order(tmp_path):
    # Registry order (task YAML `order`), hold-out last; not alphabetical (convsent < counterfact).
    for task in ("zsre", "convsent", "counterfact", "zzz-custom"):
        _write(tmp_path, f"a-{task}", "Pre-edit", 0, [0.0, 1.0], task=task)
    df = compare.read_cases(tmp_path)
    rows = [line.split(" | ")[0].lstrip("| ") for line in compare.long_table(df, ["reliability"]).splitlines()[2:]]
    assert rows == ["counterfact", "convsent", "zzz-custom", "zsre"]
    header = compare.interval_table(df, ["reliability"]).splitlines()[0]
    assert header.index("counterfact reliability") < header.index("convsent reliability") < header.index("zsre")


def test_n_is_per_metric_when_a_probe_exists_for_some_records_only():
    """Portability exists for 2 of 4 recent records: its row says n=2, reliability's n=4."""
    import pandas as pd
    from instructedit.evaluate import compare

    rows = [{"method": m, "seed": "", "task": "recent", "case_id": f"r{i}", "reliability": 1.0,
             "portability": 1.0 if i < 2 else float("nan")} for m in ("InstructEdit", "Pre-edit") for i in range(4)]
    df = pd.DataFrame(rows)
    text = compare.long_table(df, ["reliability", "portability"])
    assert "| recent | reliability | 4 |" in text and "| recent | portability | 2 |" in text
    wide = compare.interval_table(df, ["reliability", "portability"])
    assert "recent reliability (n=4)" in wide and "recent portability (n=2)" in wide


def test_instruction_gap_is_paired_within_a_method(tmp_path):
    # InstructEdit: instructed probes always right, plain right on 15 of 40 -> gap 25/40;
    # Pre-edit: instructed = plain -> gap exactly 0 with a zero-width interval.
    rows = lambda rel, inst: [{"case_id": f"c{i}", "task": "zsre", "reliability": float(r),
                               "reliability_instructed": float(s)} for i, (r, s) in enumerate(zip(rel, inst))]
    for name, method, rel, inst in (("ie", "InstructEdit", [1.0] * 15 + [0.0] * 25, [1.0] * 40),
                                    ("pre", "Pre-edit", [0.0, 1.0] * 20, [0.0, 1.0] * 20)):
        d = tmp_path / name
        d.mkdir()
        pd.DataFrame(rows(rel, inst)).to_parquet(d / "cases.parquet")
        (d / "run.json").write_text(json.dumps({"tags": {"method": method}}))
    df = compare.read_cases(tmp_path)
    g = compare.instruction_gap(df, "InstructEdit", "zsre", "reliability")
    assert g.mean == pytest.approx(25 / 40) and g.n == 40 and g.ci_low > 0.4
    z = compare.instruction_gap(df, "Pre-edit", "zsre", "reliability")
    assert z.mean == 0 and z.ci_low == 0 and z.ci_high == 0
    table = compare.gap_table(df, ["reliability", "reliability_instructed", "locality"])
    assert table.splitlines()[0] == "| task | metric | n | Pre-edit | InstructEdit |"
    assert table.splitlines()[2].startswith("| zsre | reliability | 40 | 0 [0, 0] | 62")
    assert compare.gap_table(df, ["locality"]) == ""  # no instructed variant: no table


def test_a_label_names_variants_of_one_method_apart(tmp_path):
    for name, label in (("a", "InstructEdit (outer loss)"), ("b", "")):
        d = tmp_path / name
        d.mkdir()
        pd.DataFrame([{"case_id": "c0", "task": "zsre", "reliability": 1.0}]).to_parquet(d / "cases.parquet")
        tags = {"method": "InstructEdit", **({"label": label} if label else {})}
        (d / "run.json").write_text(json.dumps({"tags": tags}))
    assert sorted(compare.read_cases(tmp_path)["method"]) == ["InstructEdit", "InstructEdit (outer loss)"]


def test_evaluate_label_is_a_tag(tmp_path):
    from instructedit.evaluate.run import EvalRequest, plan

    p = plan(EvalRequest(baseline="pre-edit", model="tiny-llama", label="pre (tiny)", out=str(tmp_path)))
    assert p.tags["label"] == "pre (tiny)"
    assert "label" not in plan(EvalRequest(baseline="pre-edit", model="tiny-llama", out=str(tmp_path))).tags


def test_instruction_gap_pairs_each_seed_with_itself():
    """Three seeds of one editor at different levels (plain right on 0, 20, 30 of 40 cases), each
    right on 10 more cases when instructed: the gap is 0.25 under every seed. A seed without
    instructed probes is left out rather than emptying every case."""
    rows = []
    for seed, right in (("0", 0), ("1", 20), ("2", 30)):
        for i in range(40):
            plain = float(i >= 40 - right)
            rows.append({"method": "InstructEdit", "task": "zsre", "case_id": f"c{i}", "seed": seed,
                         "reliability": plain, "reliability_instructed": 1.0 if i < 10 else plain})
    rows += [{"method": "InstructEdit", "task": "zsre", "case_id": f"c{i}", "seed": "3",
              "reliability": 1.0, "reliability_instructed": float("nan")} for i in range(40)]
    df = pd.DataFrame(rows)
    g = compare.instruction_gap(df, "InstructEdit", "zsre", "reliability")
    assert g.n == 40 and g.mean == pytest.approx(0.25) and 0.1 < g.ci_low < g.ci_high < 0.45
    # seen vs unseen of the same editors: a constant -0.1 per case and seed has a zero-width interval
    seen = df[df["seed"] != "3"].assign(method="seen")
    both = pd.concat([seen, seen.assign(method="unseen", reliability=seen["reliability"] - 0.1)])
    d = compare.paired_difference(both, "unseen", "seen", "zsre", "reliability", same_editors=True)
    assert d.as_dict() == pytest.approx({"mean": -0.1, "ci_low": -0.1, "ci_high": -0.1, "n": 40})
    apart = compare.paired_difference(both, "unseen", "seen", "zsre", "reliability")  # seeds drawn apart
    assert apart.mean == pytest.approx(-0.1) and apart.ci_high - apart.ci_low > 0.1
