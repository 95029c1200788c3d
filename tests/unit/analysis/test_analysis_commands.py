import sys
import types

import numpy as np
import synthetic_runs
from instructedit import cli, tracking


def test_ui_dry_run_prints_address_and_one_worker(capsys, tracking_uri):
    assert cli.main(["ui", "--dry-run", "--port", "5123"]) == 0
    out = capsys.readouterr().out
    assert "http://127.0.0.1:5123" in out and tracking_uri in out
    assert "--host 127.0.0.1" in out and "--workers 1" in out and "--port 5123" in out


def test_report_command_writes_and_logs(store, tmp_path, capsys):
    uri, exp, _ = store
    out = tmp_path / "rep"
    assert cli.main(["report", "--experiment", exp, "--tracking-uri", uri, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    html = (out / "report.html").read_text()
    # bars with intervals, plain vs instructed, training curves, and the paper's three; no gradients here
    assert html.count("data:image/png;base64,") == 6
    assert "Editing-gradient PCA: no data" in html and 'class="results"' in html
    assert "<h2>Provenance</h2>" in html and "instructedit train --config instructedit" in html
    assert "Hatched bars have no interval: FT-L: not logged by the run" in html
    assert "#/experiments/" in html and "/runs/" in html  # links to MLflow runs
    assert (out / "tables" / "table3.md").exists() and (out / "figures" / "task_scaling.png").exists()
    rid = text.split("logged to MLflow run ")[1].split()[0]
    run = tracking.get_run(rid, tracking_uri=uri)
    assert run.data.tags["kind"] == "report"
    arts = tracking.list_artifacts(rid, tracking_uri=uri)
    assert "report.html" in arts and "figures" in arts and "tables" in arts


def _stub_collector(monkeypatch, calls):
    def collect_transformed_gradients(checkpoint_path, records):
        calls.append((checkpoint_path, len(records)))
        tasks = [r.task for r in records]
        names = sorted(set(tasks))
        x, _ = synthetic_runs.gradient_clusters(1, 96, seed=0, tasks=names)  # one centre per task
        rng = np.random.default_rng(len(calls))
        rows = np.stack([x[names.index(t)] for t in tasks]) + rng.normal(size=(len(tasks), 96))
        return rows.astype(np.float32), tasks

    mod = types.ModuleType("instructedit.editor.analysis")
    mod.collect_transformed_gradients = collect_transformed_gradients
    monkeypatch.setitem(sys.modules, "instructedit.editor.analysis", mod)

    # The command resolves each --editor before collecting (api.resolve_checkpoint); these paths are
    # stand-ins for the stub collector, so resolving them is stubbed too.
    class Resolved:
        def __init__(self, spec):
            self.path = spec

        def line(self):
            return f"{self.path} (stub)"

    import instructedit.api

    monkeypatch.setattr(instructedit.api, "resolve_checkpoint", lambda spec, uri=None: Resolved(spec))


def test_analyze_gradients_command_and_report(store, tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq
    from instructedit.data.record import records_to_table

    from analysis.gradients import load_gradients
    from analysis.report import build_report

    uri, _, _ = store
    calls = []
    _stub_collector(monkeypatch, calls)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    pq.write_table(records_to_table(synthetic_runs.edit_records(12)), prepared / "part-0.parquet")
    out = tmp_path / "grads"
    argv = ["analyze", "gradients", "--editor", "InstructEdit=/ckpt/ie", "--editor", "/ckpt/multi/checkpoint",
            "--records", str(prepared), "--tasks", "counterfact", "recent", "convsent", "--n", "10",
            "--out", str(out), "--experiment", "gradients-exp", "--tracking-uri", uri]
    assert cli.main(argv) == 0
    assert calls == [("/ckpt/ie", 30), ("/ckpt/multi/checkpoint", 30)]
    groups = load_gradients(out / "gradients.npz")
    assert list(groups) == ["InstructEdit", "multi"]
    x, tasks = groups["InstructEdit"]
    assert x.shape == (30, 96) and sorted(set(tasks)) == ["convsent", "counterfact", "recent"]
    assert (out / "gradient_pca.png").stat().st_size > 5000
    assert (out / "gradients_summary.json").exists()

    rep = build_report("gradients-exp", out_dir=tmp_path / "rep", tracking_uri=uri, log=False)
    assert "gradient_pca" in rep.figures
    assert any("table3" in n for n in rep.notes)  # no eval runs there: noted, not a crash
    assert rep.path.read_text().count("data:image/png;base64,") == 1


def test_parse_editor_labels():
    from analysis.commands.analyze import parse_editor

    assert parse_editor("IE=/a/b") == ("IE", "/a/b")
    assert parse_editor("/runs/mend-multi/checkpoint") == ("mend-multi", "/runs/mend-multi/checkpoint")
    assert parse_editor("/runs/ie") == ("ie", "/runs/ie")


def test_unknown_records_path_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _stub_collector(monkeypatch, [])
    rc = cli.main(["analyze", "gradients", "--editor", "x", "--records", str(tmp_path / "nope"),
                   "--out", str(tmp_path / "o")])
    assert rc == 2 and "no prepared records" in capsys.readouterr().err
