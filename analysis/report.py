"""One self-contained HTML page per experiment: tables, figures (base64 PNG), provenance, run links.

`build_report` writes `<out>/report.html` plus the pieces (`figures/*.png`, `tables/*.{md,csv,html}`)
and, unless told not to, logs them as artifacts of a new run tagged kind=report; `publish_tables`
copies the Markdown tables to a results folder. Sections: the results tables (x100 rounded to what n
supports, 95% intervals and n; Table 3, seen vs unseen instructions and task scaling from per-case
results where the runs logged them, see analysis.cases and analysis.studies_cases); figures: per task and method
bars with intervals, plain vs instructed probes, training curves with the selected step, then the
paper's figures (task scaling, ConvSent balancing, seen vs unseen, gradient PCA); one provenance block
per run (git commit, dataset hash, base model and its source, checkpoint step, seed, budget, command);
every run with a link to the MLflow UI. A table or figure without data is left out with a short
note; it never fails the report.
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
from instructedit.editor import methods as registry

from . import cases, figures, gradients, studies_cases, tables
from .runs import load_runs, metric_histories, run_index, search

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
.ci{font-size:.75em;color:#666;white-space:nowrap}th.instr{background:#fdf1e6}
.prov{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:.8em}
.prov table{margin:0;width:100%}.prov th{text-align:left;width:9em;font-weight:normal;color:#555}
.prov td{text-align:left;word-break:break-all}.prov caption{font-weight:bold}.missing{color:#a33;font-style:italic}
"""
# Figures of the report in order: (file name, caption). Others (the paper's) follow.
CORE_FIGURES = {
    "task_bars": "Per task and method: headline metrics (plain probes) with 95% bootstrap intervals and n",
    "instructed_vs_plain": "Plain vs instructed probes: reliability (ES for ConvSent) per method and task",
    "training_curves": "Training curves: losses and validation metrics over steps, the selected checkpoint marked",
}
MISSING_TEXT = "not logged"
# The report's table files (stems of tables/<stem>.md|.html; --results-dir copies the .md).
TABLE3, TABLE1, TABLE3_CASES = "table3", "table1", "table3_cases"



@dataclass
class Report:
    path: Path
    out_dir: Path
    run_id: str | None = None
    tables: dict[str, Path] = field(default_factory=dict)  # name -> .html file
    markdown: dict[str, Path] = field(default_factory=dict)  # name -> .md file (what publish_tables copies)
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


def _trained_runs(index: pd.DataFrame, tracking_uri: str | None) -> pd.DataFrame:
    """The runs that trained an editor, oldest first: kind train (`instructedit train`) or a study
    trial (the table3 grid trains only that way) with a logged loss history; a trial that only
    evaluated (a baseline arm) has none. One history query per candidate run."""
    if not len(index):
        return index
    cand = index[index["kind"].isin(cases.TRAINED_KINDS)]
    have = set(metric_histories(cand["run_id"], keys=[figures.LOSS_KEYS[0]], tracking_uri=tracking_uri)["run_id"])
    return cand[cand["run_id"].isin(have)]


def build_report(experiment: str, out_dir: str | Path | None = None, tracking_uri: str | None = None,
                 log: bool = True, gradient_files: list[str | Path] | None = None,
                 ui_url: str = DEFAULT_UI, split: str = "test", run_ids: list[str] | None = None) -> Report:
    """`run_ids`: only these runs (and their child runs), e.g. one demo's training and evaluation
    runs; default every run of the experiment. Runs with per-case results (`eval/<split>/cases.parquet`)
    make tables/table3_cases.md (analysis.cases: seeds aggregated, intervals, paired differences);
    the metric-based Table 3 shows the others (several runs behind a cell averaged, no interval)."""
    out_dir = Path(out_dir) if out_dir else default_out_dir(experiment)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    rep = Report(path=out_dir / "report.html", out_dir=out_dir)
    tidy = load_runs(experiment, tracking_uri)
    index = run_index(experiment, tracking_uri)
    if run_ids:
        keep = set(run_ids)
        keep |= set(index.loc[index["parent_run_id"].isin(keep), "run_id"])
        tidy, index = tidy[tidy["run_id"].isin(keep)], index[index["run_id"].isin(keep)]
    body: list[str] = []

    # ------------------------------------------------------------------------------ tables
    body.append("<h2>Tables</h2>")
    ct = _case_tables(experiment, index, split, tracking_uri, rep, body)
    # A run with per-case results is in table3_cases / table1_cases (seeds aggregated with an
    # interval); the metric-based Tables 3 and 1 show the other runs only, so no cell is shown twice.
    metric_only = tidy[~tidy["run_id"].isin(ct.run_ids)]
    for stem, make, rows in ((TABLE3, tables.table3, metric_only), (TABLE1, tables.table1, metric_only)):
        try:
            t = make(rows, split=split)
        except Exception as e:  # noqa: BLE001 - a malformed run must not cost the whole report
            t = None
            rep.notes.append(f"{stem}: failed ({e.__class__.__name__}: {e})")
            traceback.print_exc()
        if t is None or t.empty:
            note = f"{stem}: no runs with the tags and `{split}/<task>/<metric>` metrics it needs."
            if not ct.empty and (stem == TABLE3 or _has_single_task(ct)):
                continue  # every evaluation has per-case results: table3_cases / table1_cases are the tables
            rep.notes.append(note)
            body.append(f'<p class="note">{html.escape(note)}</p>')
            continue
        if stem == TABLE3 and not ct.empty:
            t.note = f"{METRIC_TABLE3_NOTE} {t.note}"
        paths = t.save(out_dir / "tables", stem)
        rep.tables[stem], rep.markdown[stem] = paths["html"], paths["md"]
        body.append(f'<div class="scroll">{t.to_html()}</div>')
        if t.note:
            body.append(f'<p class="note">{html.escape(t.note)}</p>')
    _study_case_tables(experiment, ct, index, split, tracking_uri, rep, body)

    # ----------------------------------------------------------------------------- figures
    body.append("<h2>Figures</h2>")
    made = []
    train_runs = _trained_runs(index, tracking_uri)
    core = {
        "task_bars": lambda: figures.task_bars(tidy, split=split),
        "instructed_vs_plain": lambda: figures.instructed_vs_plain(tidy, split=split),
        "training_curves": lambda: figures.training_curves(
            metric_histories(train_runs["run_id"].tail(6), keys=list(figures.LOSS_KEYS + figures.VAL_KEYS),
                             tracking_uri=tracking_uri), train_runs),
    }
    for name, make in core.items():
        try:
            fig = make()
        except Exception as e:  # noqa: BLE001 - noted in the report, never fatal
            fig = None
            rep.notes.append(f"{name}: failed ({e.__class__.__name__}: {e})")
            traceback.print_exc()
        made.append((name, CORE_FIGURES[name], fig))
    no_ci = _without_interval(figures.cell_data(tidy, split))
    if no_ci:
        rep.notes.append(f"bars without a 95% interval (hatched): {no_ci}")
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
        caption = title
        if name in ("task_bars", "instructed_vs_plain") and no_ci:
            caption += f". Hatched bars have no interval: {no_ci}."
        body.append(f"<figure>{_img(png, title)}<figcaption>{html.escape(caption)}</figcaption></figure>")

    # ---------------------------------------------------------------------------- provenance
    body.append("<h2>Provenance</h2>")
    body.append(_provenance(index, ui_url, rep.notes))

    # -------------------------------------------------------------------------------- runs
    body.append("<h2>Runs</h2>")
    body.append(_runs_table(index, ui_url))

    uri = tracking.redact_text(tracking.resolve_tracking_uri(tracking_uri))
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = (
        f"<h1>InstructEdit report: {html.escape(experiment)}</h1>"
        f"<p>{len(index)} runs{' (chosen with --runs)' if run_ids else ''}, tracking store "
        f"<code>{html.escape(uri)}</code>, generated {now}. "
        f"Run links open the MLflow UI at {html.escape(ui_url)} (start it with <code>instructedit ui</code>)."
        " Values are x100 (shares; dd as it is), rounded to what the n cases behind them support: whole "
        "percents below 1,000 cases, one decimal from 1,000. Intervals are 95% bootstrap intervals over "
        "cases. Plain-probe metrics come first; (instr.) columns ask the same questions with the task "
        "instruction. Best per column in bold.</p>"
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


METRIC_TABLE3_NOTE = ("Table 3 from logged metrics, for the runs without per-case results (several runs "
                      "behind a cell are averaged, without an interval).")


def _case_tables(experiment: str, index: pd.DataFrame, split: str, tracking_uri: str | None, rep: Report,
                 body: list[str]) -> cases.CaseTables:
    """Table 3 from the runs' per-case artifacts -> tables/table3_cases.md and a section of the page."""
    try:
        ct = cases.load(index, split, tracking_uri)
        if ct.empty:
            return ct
        text = cases.markdown(ct, _cases_source(experiment, split, tracking_uri))
    except Exception as e:  # noqa: BLE001 - a malformed artifact must not cost the whole report
        rep.notes.append(f"{TABLE3_CASES}: failed ({e.__class__.__name__}: {e})")
        traceback.print_exc()
        return cases.CaseTables(pd.DataFrame(), pd.DataFrame(columns=["run_id"]))
    page = _markdown_html(text)
    rep.markdown[TABLE3_CASES] = cases.write_atomic(rep.out_dir / "tables" / f"{TABLE3_CASES}.md", text)
    rep.tables[TABLE3_CASES] = cases.write_atomic(rep.out_dir / "tables" / f"{TABLE3_CASES}.html", page)
    rep.notes.extend(ct.notes)
    body.append(f'<div class="scroll">{page}</div>')
    return ct


def _cases_source(experiment: str, split: str, tracking_uri: str | None) -> str:
    """Where a per-case table came from, for its header."""
    uri = tracking.redact_text(tracking.resolve_tracking_uri(tracking_uri))
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"MLflow experiment `{experiment}` (store `{uri}`), split `{split}`, generated {now}"


def _study_case_tables(experiment: str, ct: cases.CaseTables, index: pd.DataFrame, split: str,
                       tracking_uri: str | None, rep: Report, body: list[str]) -> None:
    """Seen vs unseen and task scaling from the same per-case rows -> tables/<name>.{md,html} and a
    section of the page each; a note instead when the experiment has no such runs."""
    for name, make in studies_cases.TABLES.items():
        try:
            text = make(ct, index, _cases_source(experiment, split, tracking_uri))
        except Exception as e:  # noqa: BLE001 - a malformed artifact must not cost the whole report
            rep.notes.append(f"{name}: failed ({e.__class__.__name__}: {e})")
            traceback.print_exc()
            continue
        if text is None:
            note = f"{name}: {studies_cases.MISSING[name]}"
            rep.notes.append(note)
            body.append(f'<p class="note">{html.escape(note)}</p>')
            continue
        page = _markdown_html(text)
        rep.markdown[name] = cases.write_atomic(rep.out_dir / "tables" / f"{name}.md", text)
        rep.tables[name] = cases.write_atomic(rep.out_dir / "tables" / f"{name}.html", page)
        body.append(f'<div class="scroll">{page}</div>')


def _has_single_task(ct: cases.CaseTables) -> bool:
    return bool(ct.runs["method_tag"].isin(tables.SINGLE_TASK).any())


def _markdown_html(text: str) -> str:
    """The Markdown this report writes (headings, pipe tables, paragraphs) as HTML."""
    e = html.escape
    out, table = [], []

    def flush():
        if table:
            head, rows = table[0], table[2:]  # table[1] is the |---| line
            out.append("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level + 1}>{e(line.lstrip('#').strip())}</h{level + 1}>")
        elif line.strip():
            out.append(f"<p>{e(line)}</p>")
    flush()
    return "".join(out)


# Every Markdown table a report can make (the metric tables, Table 3 from per-case results, the
# study tables): what publish_tables may replace or remove in a results folder, and nothing else.
TABLE_STEMS = (TABLE3, TABLE1, TABLE3_CASES, *studies_cases.TABLES)


def publish_tables(rep: Report, results_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """Copy the Markdown tables this report made to `results_dir` (e.g. docs/results/table3), each
    written via a temporary file and a rename, and remove the report tables there that this report
    no longer makes (a table of runs since deleted must not outlive them). -> (written, removed)"""
    folder = Path(results_dir)
    written = [cases.write_atomic(folder / p.name, p.read_text(encoding="utf-8")) for p in rep.markdown.values()]
    stale = [folder / f"{stem}.md" for stem in TABLE_STEMS if stem not in rep.markdown]
    removed = [p for p in stale if p.is_file()]
    for p in removed:
        p.unlink()
    return written, removed


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


def _without_interval(cells: pd.DataFrame) -> str:
    """Which methods' cells have no interval, and why: not logged by the run, or a mean over
    several runs (their intervals do not combine into one)."""
    if cells.empty:
        return ""
    bare = cells[~cells["has_ci"]]
    parts = []
    single = sorted(set(bare.loc[bare["n_runs"] == 1, "method"]))
    if single:
        parts.append(f"{', '.join(single)}: not logged by the run (`instructedit evaluate` logs "
                     "`<split>/<task>/<metric>_ci_low`, `_ci_high`, `_n`)")
    several = sorted(set(bare.loc[bare["n_runs"] > 1, "method"]))
    if several:
        parts.append(f"{', '.join(several)}: some cells average several runs")
    return "; ".join(parts)


PROVENANCE_FIELDS = ("git commit", "dataset hash", "base model", "model source", "checkpoint step", "seed",
                     "budget", "command")


def _value(r: pd.Series, *names: str) -> str:
    for n in names:
        v = r.get(n)
        if v is not None and not (isinstance(v, float) and pd.isna(v)) and str(v).strip() not in ("", "None"):
            return str(v).strip()
    return ""


def _int(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None


STUDY_SPACE = "params.study.space."  # a study parent run logs its search space as study.space.<key>
# Keys of a study space that make its trials different methods: the parent's own method tag is its base's.
METHOD_KEYS = frozenset({"arm", "mode", "method"})


def searched(r: pd.Series) -> dict[str, str]:
    """A study parent run's search space: key -> the values searched (empty for any other run)."""
    return {str(k)[len(STUDY_SPACE):]: _value(r, str(k)) for k in r.index
            if str(k).startswith(STUDY_SPACE) and _value(r, str(k))}


def provenance(r: pd.Series) -> dict[str, tuple[str, str]]:
    """One run's provenance: field -> (value, how it was found); value '' when not logged."""
    from instructedit.provenance import model_source

    out: dict[str, tuple[str, str]] = {}
    method = registry.by_display(str(r.get("method") or ""))
    untrained = method is not None and not method.trained and str(r.get("kind") or "") == "eval"
    # A study's parent run trains and evaluates nothing itself: its trials (kind trial) do, and
    # carry their own checkpoint, seed and data; say where to look instead of "not logged".
    study = str(r.get("kind") or "") == "study"
    space = searched(r)
    editor_run = _value(r, "editor_run")
    commit = _value(r, "git_commit")
    out["git commit"] = (commit[:12] if commit and commit != "unknown" else "", "")
    # An evaluation run's hash is of the records it evaluated (instructions left out), a training
    # run's of its train and validation records.
    data_hash = _value(r, "dataset_hash")[:16]
    out["dataset hash"] = (data_hash, "of the records evaluated" if data_hash and str(r.get("kind")) == "eval" else "")
    if study and not data_hash:
        out["dataset hash"] = ("per trial", "a study's parent run reads no records; each trial logs its own")
    model = _value(r, "model", "params.model")
    out["base model"] = (model, "")
    src = _value(r, "model_source")
    if src:
        out["model source"] = (src, "")
    elif model:
        out["model source"] = (model_source(model), "from today's configs/models, not logged with the run")
    else:
        out["model source"] = ("", "")
    step = _value(r, "best_step")
    ckpt = _value(r, "params.eval.checkpoint")
    if step:
        out["checkpoint step"] = (step, "selected by validation")
    elif ckpt:
        out["checkpoint step"] = (ckpt, "the checkpoint file evaluated")
    elif editor_run:
        out["checkpoint step"] = (f"see editor run {editor_run[:8]}", "")
    elif untrained:
        out["checkpoint step"] = ("none", "no trained editor")  # Pre-edit, FT-L, ROME, ...
    elif study:
        best_run = _value(r, "best_run_id")
        out["checkpoint step"] = ((f"the best trial's: see run {best_run[:8]}", "best by the study's metric")
                                  if best_run else ("none", "no trial finished"))
    else:
        out["checkpoint step"] = ("", "")
    seed = _value(r, "seed", "params.train.seed")
    out["seed"] = (seed, "") if seed else ((f"see editor run {editor_run[:8]}", "") if editor_run else
                                            (("none", "no training") if untrained else ("", "")))
    if "train.seed" in space:
        out["seed"] = (f"searched: {space['train.seed']}", "one per trial")
    edits, best = _value(r, "train_edits"), _value(r, "checkpoint_edits")
    batch, steps = _int(_value(r, "params.train.batch_size")), _int(_value(r, "params.train.max_steps"))
    if edits:
        text = f"{edits} training edits"
        if batch:
            text += f" ({int(edits) // batch} steps x batch {batch})" if _int(edits) is not None else ""
        if best:
            text += f"; the selected checkpoint had seen {best}"
        out["budget"] = (text, "")
    elif batch and steps:
        out["budget"] = (f"up to {steps * batch} training edits ({steps} steps x batch {batch})",
                         "planned (train.max_steps), not the steps run")
    elif editor_run:
        out["budget"] = (f"see editor run {editor_run[:8]}", "")
    elif untrained:
        if method.reference:
            out["budget"] = ("0 training edits", "the unedited model")
        else:  # evaluate logs the method's hyperparameters as <name without dashes>.<field>
            key = method.name.replace("-", "")
            steps = _value(r, f"params.{key}.steps", f"params.{key}.target.steps")
            note = f"{method.display} computes each edit at evaluation time ({steps or '?'} steps per edit)"
            out["budget"] = ("0 training edits", note)
    else:
        out["budget"] = ("", "")
    cmd = _value(r, "command")
    if cmd:
        out["command"] = (cmd, "")
    elif _value(r, "source_name"):
        out["command"] = (_value(r, "source_name"), "entry point only (no command tag)")
    else:
        out["command"] = ("", "")
    return out


def _provenance(index: pd.DataFrame, ui_url: str, notes: list[str]) -> str:
    """A block per run (study trials are listed in the runs table only)."""
    if index.empty:
        return '<p class="note">No runs in this experiment.</p>'
    e = html.escape
    runs = index[index["kind"] != "trial"]
    blocks, missing = [], {}
    for _, r in runs.iterrows():
        url = tracking.run_url(r["run_id"], str(r["experiment_id"]), ui=ui_url)
        name = r["run_name"] or r["run_id"][:8]
        # a study whose trials are different methods is not its base config's method
        label = "methods searched" if METHOD_KEYS & set(searched(r)) else str(r["method"] or "")
        what = " · ".join(x for x in (str(r["kind"] or ""), label) if x)
        rows = []
        for field_name, (value, how) in provenance(r).items():
            if value:
                cell = f"<code>{e(value)}</code>" if field_name in ("command", "git commit", "dataset hash") else e(value)
                if how:
                    cell += f' <span class="ci">({e(how)})</span>'
            else:
                cell = f'<span class="missing">{MISSING_TEXT}</span>'
                missing.setdefault(field_name, []).append(str(name))
            rows.append(f"<tr><th>{e(field_name)}</th><td>{cell}</td></tr>")
        blocks.append(f'<table><caption><a href="{e(url)}">{e(str(name))}</a> <span class="ci">{e(what)}</span>'
                      f"</caption><tbody>{''.join(rows)}</tbody></table>")
    for field_name, names in missing.items():
        notes.append(f"provenance: {field_name} not logged for {len(names)} run(s): {', '.join(names[:5])}"
                     + (" ..." if len(names) > 5 else ""))
    trials = int((index["kind"] == "trial").sum())
    tail = f'<p class="note">{trials} study trial(s): see the runs table.</p>' if trials else ""
    return f'<div class="prov">{"".join(blocks)}</div>{tail}'


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
