"""Editing-gradient arrays on disk and the records to collect them from (no torch, no editor).

`instructedit analyze gradients` collects the gradients with the editor; this module only picks the
records, writes/reads `gradients.npz` and draws the PCA figure.

gradients.npz holds `gradients` [N, dim] (float32), `tasks` [N] and `editors` [N] (the editor label of
each row); the PCA is done per editor.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import figures


def load_records(path: str | Path, tasks: list[str] | None = None, n: int = 50, split: str = "test",
                 seed: int = 0) -> list:
    """Up to `n` EditRecords per task from prepared parquet (a file or a folder of them), picked by a
    seeded hash of case_id so the same edits are used for every editor."""
    import pyarrow.dataset as ds
    from instructedit.data.record import table_to_records

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no prepared records at {path}")
    from instructedit.data.record import ARROW_SCHEMA

    # A prepared folder also holds manifest.json, rejects.jsonl, dropped.jsonl: read only parquet.
    files = [str(f) for f in sorted(path.rglob("*.parquet"))] if path.is_dir() else [str(path)]
    if not files:
        raise FileNotFoundError(f"no parquet files under {path}")
    table = ds.dataset(files, format="parquet", schema=ARROW_SCHEMA).to_table()
    df = table.to_pandas()
    if tasks:
        df = df[df["task"].isin(tasks)]
    if split and "split" in df.columns and (df["split"] == split).any():
        df = df[df["split"] == split]
    if df.empty:
        raise ValueError(f"no records for tasks {tasks or 'any'} (split {split!r}) in {path}")
    key = df["case_id"].astype(str).map(lambda c: hashlib.sha1(f"{seed}:{c}".encode()).hexdigest())
    df = df.assign(_key=key).sort_values(["task", "_key"]).groupby("task", sort=False).head(n)
    keep = table.schema.names
    import pyarrow as pa

    picked = pa.Table.from_pandas(df[keep], schema=table.schema, preserve_index=False)
    return table_to_records(picked)


def save_gradients(path: str | Path, groups: dict[str, tuple[np.ndarray, list[str]]]) -> Path:
    """groups: editor label -> (array [n, dim], task of each row)."""
    dims = {np.asarray(x).shape[1] for x, _ in groups.values()}
    if len(dims) != 1:
        raise ValueError(f"editors give gradients of different widths {sorted(dims)}; run them separately")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    xs, tasks, editors = [], [], []
    for label, (x, ts) in groups.items():
        x = np.asarray(x, dtype=np.float32)
        if len(x) != len(ts):
            raise ValueError(f"editor {label}: {len(x)} gradient rows but {len(ts)} task labels")
        xs.append(x)
        tasks += list(ts)
        editors += [label] * len(ts)
    np.savez_compressed(path, gradients=np.concatenate(xs), tasks=np.asarray(tasks, dtype=str),
                        editors=np.asarray(editors, dtype=str))
    return path


def load_gradients(path: str | Path) -> dict[str, tuple[np.ndarray, list[str]]]:
    with np.load(path, allow_pickle=False) as z:
        x, tasks = z["gradients"], z["tasks"].astype(str)
        editors = z["editors"].astype(str) if "editors" in z.files else np.full(len(tasks), "editor")
    out = {}
    for label in dict.fromkeys(editors.tolist()):
        sel = editors == label
        out[label] = (x[sel], tasks[sel].tolist())
    return out


def write_figure(groups: dict[str, tuple[np.ndarray, list[str]]], out: str | Path,
                 n_components: int = 10) -> Path | None:
    fig = figures.gradient_pca(groups, n_components=n_components)
    return None if fig is None else figures.save(fig, out)
