"""The demo's results table (the demo itself runs in `make demo`; tests/integration/test_quiet_output.py
runs it at a tiny budget)."""

import json

from instructedit.demo import read_summary, results_table


def test_results_table(tmp_path):
    summary = {
        "zsre": {"reliability": {"mean": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 16},
                 "locality": {"mean": 0.25, "ci_low": 0.1, "ci_high": 0.4, "n": 16}},
        "counterfact": {},
        "avg": {"reliability": {"mean": 0.5, "ci_low": 0.3, "ci_high": 0.7, "n": 1600}},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    rows = read_summary(tmp_path)
    assert rows == summary
    table = results_table({"InstructEdit": rows}, ["counterfact", "zsre"])
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["method", "task", "n", "reliability"]
    assert [ln.split()[1] for ln in lines[2:]] == ["zsre", "avg"]  # no row for a task without metrics
    # n < 1000: whole percents; n >= 1000: one decimal; reliability beside its instructed variant
    assert lines[0].split()[3:5] == ["reliability", "rel.(instr.)"]
    # `mean [low, high]`, the style of every interval the platform prints (evaluate/metrics.py)
    assert lines[2].split()[2:] == ["16", "50", "[25,", "75]", "–", "–", "25", "[10,", "40]", "–"]
    assert lines[3].split()[2:6] == ["1600", "50.0", "[30.0,", "70.0]"]


def test_read_summary_csv_fallback(tmp_path):
    (tmp_path / "summary.csv").write_text("key,split,task,metric,value\n"
                                          "test/zsre/reliability,test,zsre,reliability,0.5\n")
    assert read_summary(tmp_path) == {"zsre": {"reliability": {"mean": 0.5}}}
