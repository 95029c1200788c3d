"""The demo's results table (the demo itself runs in `make demo`)."""

from instructedit.demo import _read_summary, results_table


def test_results_table(tmp_path):
    p = tmp_path / "summary.csv"
    p.write_text("key,split,task,metric,value\n"
                 "test/zsre/reliability,test,zsre,reliability,0.5\n"
                 "test/avg/reliability,test,avg,reliability,0.5\n"
                 "test/zsre/locality,test,zsre,locality,0.25\n")
    m = _read_summary(p)
    assert m == {"test/zsre/reliability": 0.5, "test/avg/reliability": 0.5, "test/zsre/locality": 0.25}
    table = results_table({"InstructEdit": m}, ["counterfact", "zsre"])
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["method", "task", "reliability"]
    assert [ln.split()[1] for ln in lines[2:]] == ["zsre", "avg"]  # no row for a task without metrics
    assert lines[2].split()[2:] == ["50.0", "-", "25.0", "-"]
