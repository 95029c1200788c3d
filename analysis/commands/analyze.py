"""`instructedit analyze gradients`: the editing-gradient analysis (collect with the editor, PCA, plot)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HELP = "analyses that need a trained editor: `analyze gradients` (PCA of transformed editing gradients)"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    g = sub.add_parser(
        "gradients", help="collect transformed editing gradients per task, project them on their principal "
        "components, plot them coloured by task",
    )
    g.add_argument("--editor", action="append", required=True, metavar="[LABEL=]CKPT",
                   help="editor: an editor.pt, a step folder, a training run folder (its best checkpoint) or "
                   "an MLflow run id (repeatable: single-task, multi-task, InstructEdit editors)")
    g.add_argument("--records", default="prepared",
                   help="prepared parquet (file or folder) written by `instructedit prepare`")
    g.add_argument("--tasks", nargs="+", default=None, help="tasks to edit (default: all in --records)")
    g.add_argument("--n", type=int, default=50, help="edits per task")
    g.add_argument("--split", default="test", choices=("train", "val", "test"), help="which split's records")
    g.add_argument("--seed", type=int, default=0, help="which records are picked")
    g.add_argument("--components", type=int, default=10, help="principal components to keep and plot")
    g.add_argument("--out", required=True, help="output folder: gradients.npz, gradient_pca.png, summary")
    g.add_argument("--experiment", default=None,
                   help="also log the outputs to a new MLflow run (kind=report, report=gradients) here; "
                   "`instructedit report` then includes the figure")
    g.add_argument("--tracking-uri", default=None, help="MLflow store for run ids and --experiment (default: "
                   "$MLFLOW_TRACKING_URI, else the project's store)")


def parse_editor(spec: str) -> tuple[str, str]:
    """`LABEL=CKPT` or `CKPT` (label: the run folder's name for a run folder, a step folder or an
    editor.pt inside one; otherwise the folder's or file's own name)."""
    from instructedit.editor.checkpoint import EDITOR_FILE, step_of

    if "=" in spec and not Path(spec).exists():
        label, path = spec.split("=", 1)
        return label, path
    p = Path(spec)
    if p.name == EDITOR_FILE:
        p = p.parent
    if step_of(p) is not None or p.name == "checkpoint":
        p = p.parent
    return p.name or spec, spec


def _collector():
    # The editor (torch) is imported only here, so `analysis/` and the other commands stay light.
    from instructedit.editor.analysis import collect_transformed_gradients

    return collect_transformed_gradients


def run(args) -> int:
    if args.analysis != "gradients":
        print(f"instructedit analyze: unknown analysis {args.analysis!r}", file=sys.stderr)
        return 2
    import numpy as np

    from .. import gradients as G

    editors = dict(parse_editor(s) for s in args.editor)
    try:
        records = G.load_records(args.records, tasks=args.tasks, n=args.n, split=args.split, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"instructedit analyze gradients: {e} (write them with `instructedit prepare`, or pass "
              "--records)", file=sys.stderr)
        return 2
    from instructedit.api import resolve_checkpoint

    # Every editor resolved (and read) before the long collection starts: a bad one fails fast.
    resolved = {}
    for label, spec in editors.items():
        resolved[label] = resolve_checkpoint(spec, args.tracking_uri)
        print(f"{label}: {resolved[label].line()}", file=sys.stderr)
    editors = {label: str(r.path) for label, r in resolved.items()}
    collect = _collector()
    groups = {}
    for label, ckpt in editors.items():
        x, tasks = collect(ckpt, records)
        groups[label] = (np.asarray(x, dtype=np.float32), [str(t) for t in tasks])
        print(f"{label}: {groups[label][0].shape[0]} gradients of width {groups[label][0].shape[1]}")
    return write_outputs(groups, Path(args.out), args.components, args.experiment, args.tracking_uri,
                         editors=editors)


def write_outputs(groups, out: Path, components: int = 10, experiment: str | None = None,
                  tracking_uri: str | None = None, editors: dict | None = None) -> int:
    """gradients.npz + gradient_pca.png + gradients_summary.json under `out`; optionally logged."""
    from .. import gradients as G
    from ..pca import centroid_accuracy, pca

    out.mkdir(parents=True, exist_ok=True)
    npz = G.save_gradients(out / "gradients.npz", groups)
    png = G.write_figure(groups, out / "gradient_pca.png", n_components=components)
    summary = {}
    for label, (x, tasks) in groups.items():
        res = pca(x, n_components=components, return_components=False)
        summary[label] = {
            "checkpoint": (editors or {}).get(label, ""),
            "n": len(x), "dim": int(x.shape[1]), "tasks": sorted(set(tasks)),
            "explained_variance_ratio": [round(float(v), 6) for v in res.explained_variance_ratio],
            "centroid_accuracy_pc12": centroid_accuracy(res.projections[:, :2], tasks),
        }
    (out / "gradients_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"gradients: {npz}")
    print(f"figure:    {png}")
    if experiment:
        from instructedit import tracking

        tasks = sorted({t for _, ts in groups.values() for t in ts})
        tags = {"kind": "report", "report": "gradients", "mode": "", "method": "", "tasks": ",".join(tasks)}
        with tracking.run(experiment, "gradient-analysis", tags=tags, tracking_uri=tracking_uri,
                          params={"editors": json.dumps(editors or {})}) as rid:
            for f in (npz, png, out / "gradients_summary.json"):
                if f is not None:
                    tracking.log_artifact(f, run_id=rid)
        print(f"logged to {tracking.logged_to(rid, tracking_uri, experiment)}")
    return 0
