"""One self-contained HTML page per experiment: tables, figures (base64 PNG), links to the MLflow runs.

`build_report` writes `<out>/report.html` plus the pieces (`figures/*.png`, `tables/*.{md,csv,html}`)
and, unless told not to, logs them as artifacts of a new run tagged kind=report. A table or figure
without data is left out with a short note; it never fails the report.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from instructedit import tracking

from . import figures, gradients, tables
from .runs import load_runs, run_index, search

DEFAULT_UI = "http://127.0.0.1:5000"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}tbody th{text-align:left;font-weight:normal}
td.best{background:#e8f5e9}caption{caption-side:top;text-align:left;font-weight:bold;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}.note{color:#777;font-style:italic}
table.runs td{text-align:left}.scroll{overflow-x:auto}code{background:#f4f4f4;padding:0 .2em}
"""


@dataclass
class Report:
    path: Path
    out_dir: Path
    run_id: str | None = None
    tables: dict[str, Path] = field(default_factory=dict)  # name -> .html file
    figures: dict[str, Path] = field(default_factory=dict)  # name -> .png file
    notes: list[str] = field(default_factory=list)  # what was left out and why


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _gradient_groups(experiment: str, extra: list[str | Path], tracking_uri: str | None,
                     notes: list[str]) -> dict[str, dict]:
    """Gradient arrays: files given explicitly, else the latest `analyze gradients` run's artifact."""
    found = {}
    for p in extra:
        try:
            found[str(p)] = gradients.load_gradients(p)
        except Exception as e:  # noqa: BLE001 - noted in the report, never fatal
            notes.append(f"gradients file {p} could not be read: {e}")
    if found:
        return found
    runs = search(experiment, tracking_uri)
    if runs.empty or "tags.report" not in runs.columns:
        return found
    runs = runs[(runs["tags.report"] == "gradients")].sort_values("start_time", ascending=False)
    for rid in runs["run_id"][:1]:
        try:
            local = tracking.download_artifacts(rid, "gradients.npz", tracking_uri=tracking_uri)
            found[f"run {rid[:8]}"] = gradients.load_gradients(local)
        except Exception as e:  # noqa: BLE001 - noted in the report, never fatal
            notes.append(f"gradients of run {rid} could not be read: {e}")
    return found


def build_report(experiment: str, out_dir: str | Path | None = None, tracking_uri: str | None = None,
                 log: bool = True, gradient_files: list[str | Path] | None = None,
                 ui_url: str = DEFAULT_UI, split: str = "test") -> Report:
    out_dir = Path(out_dir) if out_dir else default_out_dir(experiment)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    rep = Report(path=out_dir / "report.html", out_dir=out_dir)
    tidy = load_runs(experiment, tracking_uri)
    index = run_index(experiment, tracking_uri)
    body: list[str] = []

    # ------------------------------------------------------------------------------ tables
    body.append("<h2>Tables</h2>")
    for stem, make in (("table3", tables.table3), ("table1", tables.table1)):
        try:
            t = make(tidy, split=split)
        except Exception as e:  # noqa: BLE001 - a malformed run must not cost the whole report
            t = None
            rep.notes.append(f"{stem}: failed ({e.__class__.__name__}: {e})")
            traceback.print_exc()
        if t is None or t.empty:
            note = f"{stem}: no runs with the tags and `{split}/<task>/<metric>` metrics it needs."
            rep.notes.append(note)
            body.append(f'<p class="note">{html.escape(note)}</p>')
            continue
        paths = t.save(out_dir / "tables", stem)
        rep.tables[stem] = paths["html"]
        body.append(f'<div class="scroll">{t.to_html()}</div>')
        if t.note:
            body.append(f'<p class="note">{html.escape(t.note)}</p>')

    # ----------------------------------------------------------------------------- figures
    body.append("<h2>Figures</h2>")
    made = []
    for name, (title, make) in figures.ALL.items():
        try:
            fig = make(tidy, split=split)
        except Exception as e:  # noqa: BLE001 - noted in the report, never fatal
            fig = None
            rep.notes.append(f"{name}: failed ({e.__class__.__name__}: {e})")
            traceback.print_exc()
        made.append((name, title, fig))
    groups = _gradient_groups(experiment, list(gradient_files or []), tracking_uri, rep.notes)
    for label, g in groups.items():
        try:
            made.append((f"gradient_pca{'' if len(groups) == 1 else '_' + str(len(made))}",
                         f"Editing-gradient PCA ({label})", figures.gradient_pca(g)))
        except Exception as e:  # noqa: BLE001 - noted in the report, never fatal
            rep.notes.append(f"gradient PCA ({label}): failed ({e.__class__.__name__}: {e})")
    if not groups:
        made.append(("gradient_pca", "Editing-gradient PCA", None))
    for name, title, fig in made:
        if fig is None:
            note = f"{title}: no data in this experiment."
            if name == "gradient_pca":
                note += " Run `instructedit analyze gradients --experiment ...` to add it."
            rep.notes.append(note)
            body.append(f'<p class="note">{html.escape(note)}</p>')
            continue
        png = figures.png_bytes(fig)
        path = out_dir / "figures" / f"{name}.png"
        path.write_bytes(png)
        rep.figures[name] = path
        body.append(f"<figure>{_img(png, title)}<figcaption>{html.escape(title)}</figcaption></figure>")

    # -------------------------------------------------------------------------------- runs
    body.append("<h2>Runs</h2>")
    body.append(_runs_table(index, ui_url))

    uri = tracking.redact_text(tracking.resolve_tracking_uri(tracking_uri))
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = (
        f"<h1>InstructEdit report: {html.escape(experiment)}</h1>"
        f"<p>{len(index)} runs, tracking store <code>{html.escape(uri)}</code>, generated {now}. "
        f"Run links open the MLflow UI at {html.escape(ui_url)} (start it with <code>instructedit ui</code>)."
        " Values are x100; best per column in bold.</p>"
    )
    page = (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>InstructEdit report: {html.escape(experiment)}</title><style>{_CSS}</style></head>"
        f"<body>{head}{''.join(body)}</body></html>\n"
    )
    rep.path.write_text(page, encoding="utf-8")

    if log:
        rep.run_id = _log(experiment, rep, tracking_uri, tidy)
    return rep


def _runs_table(index: pd.DataFrame, ui_url: str) -> str:
    if index.empty:
        return '<p class="note">No runs in this experiment.</p>'
    e = html.escape
    cols = ["run_name", "kind", "method", "mode", "tasks", "study", "instruction_setting", "status"]
    rows = []
    for _, r in index.iterrows():
        url = tracking.run_url(r["run_id"], str(r["experiment_id"]), ui=ui_url)
        name = r["run_name"] or r["run_id"][:8]
        cells = [f'<td><a href="{e(url)}">{e(str(name))}</a></td>']
        cells += [f"<td>{e(str(r[c]) if pd.notna(r[c]) else '')}</td>" for c in cols[1:]]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    return (f'<table class="runs"><caption>Runs (links to MLflow)</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _log(experiment: str, rep: Report, tracking_uri: str | None, tidy: pd.DataFrame) -> str:
    train_tasks = sorted({t for ts in tidy["tasks"].unique() for t in ts.split(",") if t}) if len(tidy) else []
    tags = {"kind": "report", "report": "html", "mode": "", "method": "", "tasks": ",".join(train_tasks)}
    with tracking.run(experiment, run_name="report", tags=tags, tracking_uri=tracking_uri) as rid:
        tracking.log_artifact(rep.path, run_id=rid)
        for sub in ("figures", "tables"):
            d = rep.out_dir / sub
            if d.exists() and any(d.iterdir()):
                tracking.log_artifacts(d, sub, run_id=rid)
        if rep.notes:
            tracking.log_text("\n".join(rep.notes) + "\n", "notes.txt", run_id=rid)
    return rid


def default_out_dir(experiment: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return Path("reports") / safe
