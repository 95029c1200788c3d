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
from matplotlib.figure import Figure

from .pca import centroid_accuracy, pca
from .runs import split_tasks
from .tables import SCALE, order_tasks, prefer

PRIMARY = ("reliability", "es")  # the edit-success metric of each kind of task


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
        vals = frame[g].to_numpy(dtype=float) * SCALE
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
        rows = scaling if not scaling.empty else rows[(rows["kind"] == "trial") & (rows["mode"] == "instructedit")]
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
            ax.plot(s["n_train_tasks"], s["value"] * SCALE, marker="o", color=color, label=task)
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
    rows = rows[rows["mode"].isin(["instructedit", ""])]
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
