"""The paper's figures as PNG (matplotlib, Agg; no pyplot state, so safe in threads and tests).

Each figure function takes the tidy table (analysis.runs) and returns a matplotlib Figure, or None when
the runs hold no data for it; `save` writes a PNG.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from instructedit.evaluate.metrics import DEFAULT_SCALE, scale_of
from instructedit.evaluate.metrics import METRICS as REGISTRY
from matplotlib.figure import Figure

from .pca import centroid_accuracy, pca
from .runs import split_tasks
from .tables import (
    INSTRUCTED_MODES,
    METHODS,
    SINGLE_TASK,
    _cell_rows,
    _eval_rows,
    cell_interval,
    hold_out_tasks,
    order_tasks,
    prefer,
)

PRIMARY = ("reliability", "es")  # the edit-success metric of each kind of task
# Per-task bars: a figure's choice among the registry's metrics, the teacher-forced plain-probe
# shares (es for ConvSent, reliability for the others) drawn on one 0-100 axis. Not dd (a KL, its own
# scale), not the instructed variants (instructed_vs_plain) nor the _gen ones (a table column). The
# registry is the judge of the names: each must be a headline table metric shown x100 (checked below).
BAR_METRICS = ("reliability", "es", "generalization", "locality", "portability")
_unfit = [m for m in BAR_METRICS if m not in REGISTRY or not REGISTRY[m].headline or not REGISTRY[m].in_tables
          or REGISTRY[m].scale != DEFAULT_SCALE]
if _unfit:
    raise ValueError(f"analysis/figures.py BAR_METRICS: {_unfit} not headline x100 table metrics of the registry")
NO_CI_HATCH = "//"


def _colors(n: int):
    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight")
    return path


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _test_rows(tidy: pd.DataFrame, split: str) -> pd.DataFrame:
    rows = tidy[(tidy["split"] == split) & (tidy["task"] != "") & (tidy["task"] != "avg")]
    return rows[~rows["kind"].isin(["report", "optimize"])]


def _grouped_bars(ax, frame: pd.DataFrame, groups: list[str], labels: list[str]) -> None:
    """frame: index = x labels (task/metric), columns = groups; values in [0, 1] shown x100."""
    x = np.arange(len(frame.index))
    width = 0.8 / max(1, len(groups))
    for i, (g, color) in enumerate(zip(groups, _colors(len(groups)))):
        vals = frame[g].to_numpy(dtype=float) * DEFAULT_SCALE
        bars = ax.bar(x + (i - (len(groups) - 1) / 2) * width, np.nan_to_num(vals), width, label=labels[i],
                      color=color)
        for b, v in zip(bars, vals):
            if np.isfinite(v):
                ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(frame.index, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("x100")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


# ------------------------------------------------------------------- per task and method, with CIs
def method_order(methods) -> list[str]:
    rank = {m: i for i, m in enumerate(METHODS)}
    return sorted(dict.fromkeys(methods), key=lambda m: (rank.get(m, len(rank)), m))


def cell_data(tidy: pd.DataFrame, split: str = "test", metrics=BAR_METRICS) -> pd.DataFrame:
    """One row per (method, task, metric): value (mean over the runs behind the cell, chosen as in
    Table 3), ci_low, ci_high and n (the run's own when one run is behind the cell), n_runs, has_ci."""
    cols = ["method", "task", "metric", "value", "ci_low", "ci_high", "n", "n_runs", "has_ci"]
    rows = _eval_rows(tidy, split)
    rows = rows[rows["metric"].isin(metrics) & (rows["method"] != "")]
    out = []
    for (method, task, metric), g in rows.groupby(["method", "task", "metric"], sort=False):
        if method in SINGLE_TASK:
            g = prefer(g, lambda r, t=task: r["tasks"].map(split_tasks).map(lambda ts: ts == [t]))
        g = _cell_rows(g)
        iv = cell_interval(g)
        lo, hi = iv.get("ci_low", np.nan), iv.get("ci_high", np.nan)
        has = bool(np.isfinite(lo) and np.isfinite(hi)) if lo is not None and hi is not None else False
        out.append({"method": method, "task": task, "metric": metric, "value": float(g["value"].mean()),
                    "ci_low": lo if has else np.nan, "ci_high": hi if has else np.nan,
                    "n": iv.get("n", np.nan), "n_runs": g["run_id"].nunique(), "has_ci": has})
    return pd.DataFrame(out, columns=cols)


def _bars_with_ci(ax, d: pd.DataFrame, groups: list[str], xlabels: list[str], key: str, colors) -> None:
    """Grouped bars: x = `xlabels` (values of column `key`), one bar per group (method) with its 95%
    interval as an error bar; a cell without an interval is hatched and has none."""
    x = np.arange(len(xlabels))
    width = 0.8 / max(1, len(groups))
    for i, (g, color) in enumerate(zip(groups, colors)):
        sub = d[d["group"] == g].set_index(key, drop=False)
        labelled = False
        for j, xl in enumerate(xlabels):
            if xl not in sub.index:
                continue
            r = sub.loc[xl]
            scale = scale_of(r["metric"])
            v = r["value"] * scale
            pos = x[j] + (i - (len(groups) - 1) / 2) * width
            ax.bar(pos, v, width, color=color, label=None if labelled else g,
                   hatch=None if r["has_ci"] else NO_CI_HATCH, edgecolor="white" if r["has_ci"] else "#555")
            labelled = True
            if r["has_ci"]:
                lo, hi = r["ci_low"] * scale, r["ci_high"] * scale
                ax.errorbar(pos, v, yerr=[[max(0.0, v - lo)], [max(0.0, hi - v)]], fmt="none", ecolor="#222",
                            capsize=2, lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(xlabels, rotation=20, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _n_label(ns) -> str:
    ns = sorted({int(n) for n in ns if pd.notna(n)})
    if not ns:
        return "n not logged"
    return f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"


def task_bars(tidy: pd.DataFrame, split: str = "test") -> Figure | None:
    """Per task: each method's headline metrics (plain probes) as bars with 95% bootstrap intervals;
    the subplot title gives n (cases per method). Hatched bars: no interval logged for that run."""
    data = cell_data(tidy, split)
    if data.empty:
        return None
    tasks = order_tasks(data["task"].unique())
    methods = method_order(data["method"].unique())
    ncols = min(2, len(tasks))
    nrows = int(np.ceil(len(tasks) / ncols))
    fig = Figure(figsize=(6.4 * ncols, 3.6 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    colors = dict(zip(methods, _colors(len(methods))))
    held = hold_out_tasks()
    for ax, task in zip(axes, tasks):
        d = data[data["task"] == task].assign(group=lambda f: f["method"])
        metrics = [m for m in BAR_METRICS if (d["metric"] == m).any()]
        present = [m for m in methods if (d["method"] == m).any()]
        _bars_with_ci(ax, d, present, metrics, "metric", [colors[m] for m in present])
        hold = " (hold-out)" if task in held else ""
        ax.set_title(f"{task}{hold}: {_n_label(d['n'])} per method", fontsize=10)
        ax.set_ylabel("x100")
        ax.set_ylim(0, 105)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for ax in axes[1:len(tasks)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    top = 1 - 0.75 / fig.get_figheight()  # room for the title and the legend, whatever the rows
    fig.suptitle("Per task and method: mean with 95% interval (hatched: no interval)", fontsize=10,
                 y=1 - 0.12 / fig.get_figheight())
    fig.legend(list(seen.values()), list(seen.keys()), loc="upper center", ncol=min(5, len(seen)), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 1 - 0.35 / fig.get_figheight()))
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


def instructed_data(tidy: pd.DataFrame, split: str = "test", metric: str = "reliability") -> pd.DataFrame:
    """cell_data of `metric` and `<metric>_instructed` (es for ConvSent), with `probe` plain|instructed."""
    data = cell_data(tidy, split, metrics=(metric, metric + "_instructed", "es", "es_instructed"))
    if data.empty:
        return data
    base = data["metric"].str.replace("_instructed", "", regex=False)
    # ConvSent has es, not reliability; other tasks the other way round
    data = data[(base == metric) | ((base == "es") & (data["task"] == "convsent"))]
    return data.assign(probe=np.where(data["metric"].str.endswith("_instructed"), "instructed", "plain"))


def instructed_vs_plain(tidy: pd.DataFrame, split: str = "test") -> Figure | None:
    """Reliability (ES for ConvSent) on plain probes vs the same probes with the task instruction, per
    method and task: what the edit did vs what the prompt did."""
    data = instructed_data(tidy, split)
    if data.empty or not (data["probe"] == "instructed").any():
        return None
    tasks = order_tasks(data["task"].unique())
    methods = method_order(data["method"].unique())
    fig = Figure(figsize=(max(5.0, 1.6 * len(methods) * len(tasks) / 2 + 2), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(tasks), squeeze=False)[0])
    colors = {"plain": "#4c72b0", "instructed": "#dd8452"}
    for ax, task in zip(axes, tasks):
        d = data[data["task"] == task].assign(group=lambda f: f["probe"])
        present = [m for m in methods if (d["method"] == m).any()]
        groups = [g for g in ("plain", "instructed") if (d["group"] == g).any()]
        _bars_with_ci(ax, d, groups, present, "method", [colors[g] for g in groups])
        metric = "es" if task == "convsent" else "reliability"
        ax.set_title(f"{task}: {metric}, {_n_label(d['n'])}", fontsize=9)
        ax.set_ylim(0, 105)
        ax.set_ylabel("x100")
    axes[0].legend(fontsize=8, title="probe", title_fontsize=8)
    fig.suptitle("Plain vs instructed probes (95% intervals; hatched: no interval)", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- training curves
LOSS_KEYS = ("loss/total", "loss/edit", "loss/loc")
VAL_KEYS = ("val/score", "val/reliability", "val/edit_success", "val/generalization", "val/locality",
            "val/portability", "val/reliability_instructed")


def best_step_of(run: pd.Series | dict, hist: pd.DataFrame, metric: str = "val/score") -> tuple[int | None, str]:
    """The selected step: the run's `best_step` tag, else the argmax of its `metric` history."""
    tag = str(run.get("best_step", "") or "").strip()
    if tag.lstrip("-").isdigit():
        return int(tag), "selected checkpoint"
    h = hist[hist["key"] == metric]
    if h.empty:
        return None, ""
    return int(h.loc[h["value"].idxmax(), "step"]), f"best {metric} (no best_step tag)"


def training_curves(histories: pd.DataFrame, runs: pd.DataFrame, max_runs: int = 6) -> Figure | None:
    """Per training run: losses over steps (left) and validation metrics over steps (right), the
    selected step marked. `histories`: runs.metric_histories; `runs`: runs.run_index rows."""
    if histories is None or histories.empty:
        return None
    have = [r for _, r in runs.iterrows() if r["run_id"] in set(histories["run_id"])]
    if not have:
        return None
    have = have[-max_runs:]
    fig = Figure(figsize=(11.0, 3.3 * len(have) + 0.3))
    axes = fig.subplots(len(have), 2, squeeze=False)
    for (ax_l, ax_v), run in zip(axes, have):
        h = histories[histories["run_id"] == run["run_id"]]
        label = run.get("run_name") or run["run_id"][:8]
        step, why = best_step_of(run, h)
        for key, color in zip(LOSS_KEYS, _colors(len(LOSS_KEYS))):
            k = h[h["key"] == key].sort_values("step")
            if not k.empty:
                ax_l.plot(k["step"], k["value"], color=color, label=key, lw=1.2)
        if (h["key"].isin(LOSS_KEYS) & (h["value"] > 0)).any():
            ax_l.set_yscale("log")
        ax_l.set_title(f"{label}: training losses", fontsize=9)
        ax_l.set_xlabel("step")
        ax_l.grid(alpha=0.3)
        keys = [k for k in VAL_KEYS if (h["key"] == k).any()]
        for key, color in zip(keys, _colors(len(keys))):
            k = h[h["key"] == key].sort_values("step")
            ax_v.plot(k["step"], k["value"] * scale_of(key), marker="o", ms=3, color=color, label=key,
                      lw=1.2, ls="--" if key.endswith("_instructed") else "-")
        ax_v.set_title(f"{label}: validation (x100)", fontsize=9)
        ax_v.set_xlabel("step")
        ax_v.grid(alpha=0.3)
        if step is not None:
            for ax in (ax_l, ax_v):
                ax.axvline(step, color="#c44", ls=":", lw=1.2)
            score = h[(h["key"] == "val/score") & (h["step"] == step)]
            if not score.empty:
                ax_v.plot([step], [score["value"].iloc[0] * 100], marker="*", ms=12, color="#c44", ls="none",
                          label=f"{why}: step {step}")
            else:
                ax_v.plot([], [], color="#c44", ls=":", label=f"{why}: step {step}")
        for ax in (ax_l, ax_v):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------------- task scaling
def task_scaling_data(tidy: pd.DataFrame, split: str = "test",
                      metrics=("reliability", "generalization"), study: str | None = None) -> pd.DataFrame:
    """Mean value per (number of training tasks, test task, metric) over study trials.

    Which runs: those of `study` if given; else runs whose study tag mentions "scal"; else study trials
    (kind trial) of instructedit mode. The training tasks come from each run's `tasks` tag.
    """
    rows = _test_rows(tidy, split)
    rows = rows[rows["metric"].isin(metrics) & (rows["n_train_tasks"] > 0)]
    if study is not None:
        rows = rows[rows["study"] == study]
    else:
        scaling = rows[rows["study"].str.contains("scal", case=False, na=False)]
        rows = scaling if not scaling.empty else rows[(rows["kind"] == "trial") & rows["mode"].isin(INSTRUCTED_MODES)]
    if rows.empty:
        return pd.DataFrame(columns=["n_train_tasks", "train_tasks", "task", "metric", "value", "n_runs"])
    g = rows.groupby(["n_train_tasks", "task", "metric"])
    out = g["value"].mean().rename("value").reset_index()
    out["n_runs"] = g["run_id"].nunique().to_numpy()
    sets = rows.groupby("n_train_tasks")["tasks"].agg(lambda s: sorted(set(s)))
    out["train_tasks"] = out["n_train_tasks"].map(lambda n: " | ".join(sets[n]))
    return out


def task_scaling(tidy: pd.DataFrame, split: str = "test", metrics=("reliability", "generalization"),
                 study: str | None = None) -> Figure | None:
    """Reliability and generalization vs the number of training tasks, one line per test task."""
    data = task_scaling_data(tidy, split, metrics, study)
    if data.empty or data["n_train_tasks"].nunique() < 2:
        return None
    metrics = [m for m in metrics if (data["metric"] == m).any()]
    fig = Figure(figsize=(5.2 * len(metrics), 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(metrics), squeeze=False)[0])
    ns = sorted(data["n_train_tasks"].unique())
    tick = {n: _scaling_tick(data, n) for n in ns}
    for ax, metric in zip(axes, metrics):
        d = data[data["metric"] == metric]
        tasks = order_tasks(d["task"].unique())
        for task, color in zip(tasks, _colors(len(tasks))):
            s = d[d["task"] == task].sort_values("n_train_tasks")
            ax.plot(s["n_train_tasks"], s["value"] * DEFAULT_SCALE, marker="o", color=color, label=task)
        ax.set_xticks(ns)
        ax.set_xticklabels([tick[n] for n in ns], fontsize=7)
        ax.set_xlabel("training tasks")
        ax.set_ylabel(f"{metric} (x100)")
        ax.set_title(f"{metric} vs number of training tasks", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(title="test task", fontsize=8)
    fig.tight_layout()
    return fig


def _scaling_tick(data: pd.DataFrame, n: int) -> str:
    sets = data.loc[data["n_train_tasks"] == n, "train_tasks"].iloc[0].split(" | ")
    if len(sets) == 1:
        return f"{n}\n" + "+".join(split_tasks(sets[0]))
    return str(n)


# ------------------------------------------------------------------------- ConvSent balancing
def balance_data(tidy: pd.DataFrame, split: str = "test", metrics=("reliability", "es", "dd")) -> pd.DataFrame:
    """rows: `task/metric`; columns: balanced, full (means over runs carrying a balance tag/param)."""
    rows = _test_rows(tidy, split)
    rows = rows[rows["balance"].isin(["balanced", "full"]) & rows["metric"].isin(metrics)]
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(label=rows["task"] + "/" + rows["metric"])
    frame = rows.pivot_table(index="label", columns="balance", values="value", aggfunc="mean")
    order = [f"{t}/{m}" for t in order_tasks(rows["task"].unique()) for m in metrics]
    return frame.reindex([o for o in order if o in frame.index])


def convsent_balance(tidy: pd.DataFrame, split: str = "test") -> Figure | None:
    """ConvSent balanced (to 1,427 records) vs full: every task's edit success, plus ConvSent drawdown."""
    data = balance_data(tidy, split)
    if data.empty or not {"balanced", "full"} <= set(data.columns):
        return None
    fig = Figure(figsize=(max(5.0, 1.2 * len(data.index) + 2), 4.0))
    ax = fig.subplots()
    _grouped_bars(ax, data, ["balanced", "full"], ["ConvSent balanced", "ConvSent full"])
    ax.set_title("ConvSent balanced vs full training data (dd: lower is better)", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------- seen vs unseen
def instruction_data(tidy: pd.DataFrame, split: str = "test",
                     metrics=("reliability", "generalization", "es")) -> pd.DataFrame:
    rows = _test_rows(tidy, split)
    rows = rows[rows["instruction_setting"].isin(["seen", "unseen"]) & rows["metric"].isin(metrics)]
    rows = rows[rows["mode"].isin([*INSTRUCTED_MODES, ""])]
    # The same editor under both settings: evaluation runs outside studies when there are any.
    rows = prefer(rows, lambda r: r["kind"] == "eval", lambda r: r["study"] == "")
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(label=rows["task"] + "/" + rows["metric"])
    frame = rows.pivot_table(index="label", columns="instruction_setting", values="value", aggfunc="mean")
    order = [f"{t}/{m}" for t in order_tasks(rows["task"].unique()) for m in metrics]
    return frame.reindex([o for o in order if o in frame.index])


def seen_unseen(tidy: pd.DataFrame, split: str = "test") -> Figure | None:
    """The same InstructEdit editor evaluated with seen vs held-out (unseen) instructions."""
    data = instruction_data(tidy, split)
    if data.empty or not {"seen", "unseen"} <= set(data.columns):
        return None
    fig = Figure(figsize=(max(5.0, 1.1 * len(data.index) + 2), 4.0))
    ax = fig.subplots()
    _grouped_bars(ax, data, ["seen", "unseen"], ["seen instructions", "unseen instructions"])
    ax.set_title("InstructEdit with seen vs unseen instructions", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ editing gradients
def gradient_pca(groups: dict[str, tuple[np.ndarray, list[str]]], n_components: int = 10) -> Figure | None:
    """Per editor: transformed editing gradients on PC1/PC2 coloured by task, and the explained
    variance of each component. `groups`: editor label -> (array [n, dim], task of each row)."""
    groups = {k: v for k, v in groups.items() if v[0] is not None and len(v[0]) >= 2}
    if not groups:
        return None
    all_tasks = order_tasks({t for _, tasks in groups.values() for t in tasks})
    color = dict(zip(all_tasks, _colors(len(all_tasks))))
    fig = Figure(figsize=(4.6 * len(groups), 8.0))
    axes = fig.subplots(2, len(groups), squeeze=False)
    for j, (label, (x, tasks)) in enumerate(groups.items()):
        res = pca(np.asarray(x), n_components=n_components, return_components=False)
        tasks = np.asarray(tasks)
        proj = res.projections
        if proj.shape[1] < 2:
            proj = np.concatenate([proj, np.zeros((len(proj), 1))], axis=1)
        ax = axes[0, j]
        for t in all_tasks:
            sel = tasks == t
            if sel.any():
                ax.scatter(proj[sel, 0], proj[sel, 1], s=14, alpha=0.75, color=color[t], label=t)
        ratio = res.explained_variance_ratio
        ax.set_xlabel(f"PC1 ({ratio[0] * 100:.1f}% var)")
        ax.set_ylabel(f"PC2 ({(ratio[1] if len(ratio) > 1 else 0) * 100:.1f}% var)")
        acc = centroid_accuracy(proj[:, :2], tasks)
        ax.set_title(f"{label}\nnearest-centroid acc. on PC1-2: {acc:.2f}", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax2 = axes[1, j]
        comp = np.arange(1, len(ratio) + 1)
        ax2.bar(comp, ratio * 100, color="#4c72b0")
        ax2.plot(comp, np.cumsum(ratio) * 100, color="#dd8452", marker=".", label="cumulative")
        ax2.set_xlabel("principal component")
        ax2.set_ylabel("explained variance (%)")
        ax2.set_xticks(comp)
        ax2.legend(fontsize=7)
        ax2.grid(axis="y", alpha=0.3)
    fig.suptitle("Transformed editing gradients: principal components by task", fontsize=11)
    fig.tight_layout()
    return fig


ALL = {
    "task_scaling": ("Task scaling", task_scaling),
    "convsent_balance": ("ConvSent balanced vs full", convsent_balance),
    "seen_unseen": ("Seen vs unseen instructions", seen_unseen),
}
