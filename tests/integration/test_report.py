"""The report end to end: tracked runs -> `instructedit report` -> a headless Chromium opens the page and
finds every image loaded and every table filled; the MLflow UI starts; the real gradient collection.

Chromium is Debian's (`scripts/ensure_chromium.sh`, run by `make test`).
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from instructedit import cli, tracking

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]

if str(REPO) not in sys.path:  # `analysis` is top-level in the repo (packaged via pyproject too)
    sys.path.insert(0, str(REPO))


def _synthetic():
    path = REPO / "tests" / "unit" / "analysis" / "synthetic_runs.py"
    spec = importlib.util.spec_from_file_location("synthetic_runs_integration", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# Appended to a copy of the page: after load, write what the browser sees into the DOM for --dump-dom.
_CHECK = """<script>
window.addEventListener('load', function () {
  var r = {
    images: Array.from(document.images).map(function (i) {
      return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}; }),
    tables: Array.from(document.querySelectorAll('table')).map(function (t) {
      var cells = Array.from(t.querySelectorAll('tbody td'));
      return {caption: t.caption ? t.caption.textContent : '', cls: t.className,
              prov: !!t.closest('.prov'), rows: t.querySelectorAll('tbody tr').length,
              cells: cells.length, filled: cells.filter(function (c) { return c.textContent.trim(); }).length,
              intervals: t.querySelectorAll('span.ci').length,
              fields: Array.from(t.querySelectorAll('tbody th')).map(function (h) { return h.textContent; })}; }),
    h2: Array.from(document.querySelectorAll('h2')).map(function (h) { return h.textContent; })
  };
  var pre = document.createElement('pre'); pre.id = 'ie-check'; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(args: list[str], profile: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), *CHROME_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)


def _make_report(tracking_uri, tmp_path) -> Path:
    """An experiment with every kind of run plus gradient arrays, and its report."""
    syn = _synthetic()
    syn.build("e2e", uri=tracking_uri)
    from analysis.gradients import save_gradients

    npz = save_gradients(tmp_path / "gradients.npz", {
        "MEND (multi-task)": syn.gradient_clusters(15, 64, seed=1, spread=0.6),
        "InstructEdit": syn.gradient_clusters(15, 64, seed=0, spread=6.0),
    })
    out = tmp_path / "report"
    assert cli.main(["report", "--experiment", "e2e", "--out", str(out), "--gradients", str(npz)]) == 0
    return out


def test_report_end_to_end(tracking_uri, tmp_path):
    report_dir = _make_report(tracking_uri, tmp_path)
    _check_logged_and_self_contained(report_dir, tracking_uri)
    _check_in_headless_chromium(report_dir, tmp_path)


FIGURES = {"task_bars", "instructed_vs_plain", "training_curves", "task_scaling", "convsent_balance", "seen_unseen",
           "gradient_pca"}


def _check_logged_and_self_contained(report_dir, tracking_uri):
    page = (report_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert not re.search(r'(src|href)="(?!data:|http://127\.0\.0\.1)', page)  # nothing else to fetch
    runs = tracking.search_runs("e2e", filter_string="tags.kind = 'report'", tracking_uri=tracking_uri)
    assert len(runs) == 1
    arts = tracking.list_artifacts(runs["run_id"].iloc[0], tracking_uri=tracking_uri)
    assert {"report.html", "figures", "tables"} <= set(arts)
    figs = tracking.list_artifacts(runs["run_id"].iloc[0], "figures", tracking_uri=tracking_uri)
    assert {f"figures/{name}.png" for name in FIGURES} <= set(figs)


def _check_in_headless_chromium(report_dir, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure_chromium.sh (make test does)")
    checked = tmp_path / "checked.html"
    checked.write_text((report_dir / "report.html").read_text().replace("</body>", _CHECK + "</body>"))
    res = _chromium(["--virtual-time-budget=10000", "--dump-dom", checked.as_uri()], tmp_path / "profile1")
    m = re.search(r'<pre id="ie-check">(.*?)</pre>', res.stdout, re.DOTALL)
    assert m, f"no check output from chromium (rc {res.returncode}): {res.stderr[-2000:]}"
    seen = json.loads(html.unescape(m.group(1)))
    assert len(seen["images"]) == len(FIGURES)
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert seen["h2"] == ["Tables", "Figures", "Provenance", "Runs"]
    captions = [t["caption"] for t in seen["tables"]]
    assert any(c.startswith("Table 3") for c in captions) and any(c.startswith("Table 1") for c in captions)
    assert any(c.startswith("Runs") for c in captions)
    for t in seen["tables"]:
        assert t["rows"] > 0 and t["cells"] > 0 and t["filled"] > 0, t
        if t["cls"] == "results":  # every cell of a results table holds a value or the missing mark
            assert t["filled"] == t["cells"], t
            assert t["intervals"] > 0, t  # 95% intervals and n shown under the values
    prov = [t for t in seen["tables"] if t["prov"]]
    assert prov and all(t["fields"] == ["git commit", "dataset hash", "base model", "model source",
                                        "checkpoint step", "seed", "budget", "command"] for t in prov)
    assert all(t["filled"] == t["cells"] for t in prov)  # a value or "not logged", never blank
    train = next(t for t in prov if t["caption"].startswith("instructedit ") and "train" in t["caption"])
    assert train["rows"] == 8

    shot = report_dir / "report.png"
    res = _chromium(["--window-size=1280,6000", f"--screenshot={shot}", (report_dir / "report.html").as_uri()],
                    tmp_path / "profile2")
    assert shot.exists() and shot.stat().st_size > 20_000, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _check_screenshot(shot)


def _check_screenshot(shot):
    """The page as rendered: not blank, and the figures drew colour (bars and lines), not only text."""
    from matplotlib.image import imread

    img = imread(str(shot))[..., :3]
    assert img.shape[0] >= 3000 and img.shape[1] == 1280
    assert img.std() > 0.05  # a blank or failed page is one flat colour
    sat = img.max(axis=2) - img.min(axis=2)  # text is grey: colour means the figures are there
    assert (sat > 0.3).mean() > 0.01


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_starts_on_localhost(tracking_uri):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "instructedit", "ui", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first
        deadline, ok = time.time() + 120, False  # slow on a loaded 2-core box
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    ok = r.status == 200
                    break
            except OSError:
                time.sleep(0.5)
        assert ok, f"MLflow UI did not answer on port {port} (exit {proc.poll()})"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the UI and the workers it started, nothing else
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_analyze_gradients_with_a_real_editor(tmp_path, request):
    """End to end with the editor. Skips only while collect_transformed_gradients does not exist; needs a
    `tiny_editor_checkpoint` fixture (path to a trained editor checkpoint of a tiny model)."""
    try:
        from instructedit.editor.analysis import collect_transformed_gradients  # noqa: F401
    except ImportError as e:
        if "collect_transformed_gradients" in str(e) or "instructedit.editor.analysis" in str(e):
            pytest.skip("instructedit.editor.analysis.collect_transformed_gradients does not exist yet")
        raise
    import pyarrow.parquet as pq
    from instructedit.data.record import records_to_table

    from analysis.gradients import load_gradients

    ckpt = request.getfixturevalue("tiny_editor_checkpoint")
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    pq.write_table(records_to_table(_synthetic().edit_records(6)), prepared / "part-0.parquet")
    out = tmp_path / "grads"
    assert cli.main(["analyze", "gradients", "--editor", f"tiny={ckpt}", "--records", str(prepared),
                     "--n", "4", "--out", str(out)]) == 0
    x, tasks = load_gradients(out / "gradients.npz")["tiny"]
    assert x.shape[0] == len(tasks) == 16 and x.shape[1] > 0 and (x != 0).any()
    assert (out / "gradient_pca.png").stat().st_size > 0
