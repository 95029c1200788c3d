"""`instructedit report`: one self-contained HTML page of an experiment's tables, figures and runs."""

from __future__ import annotations

HELP = "write the HTML report of an experiment (tables, figures, run links) and log it to MLflow"
DESCRIPTION = (
    "Reads the experiment's runs from MLflow, writes <out>/report.html (figures embedded) plus "
    "figures/*.png and tables/*.{md,csv,html}, and logs them as artifacts of a new run (kind=report). "
    "Table 3 comes from the runs' per-case results (eval/<split>/cases.parquet: seeds aggregated, 95% "
    "intervals, n, paired InstructEdit differences) where they logged them, else from logged metrics."
)


def add_arguments(p) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument("--out", default=None, help="output folder (default: reports/<experiment>)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else the "
                   "project's sqlite store <checkout>/mlruns/mlflow.db)")
    p.add_argument("--split", default="test", help="which evaluation split the tables and figures use")
    p.add_argument("--gradients", action="append", default=[], metavar="NPZ",
                   help="gradients.npz from `instructedit analyze gradients` (repeatable; default: the "
                   "latest one logged to the experiment)")
    p.add_argument("--ui-url", default="http://127.0.0.1:5000", help="MLflow UI address the run links use")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    p.add_argument("--runs", nargs="+", metavar="RUN_ID",
                   help="only these MLflow runs and their child runs (default: every run of the experiment)")
    p.add_argument("--results-dir", default=None, metavar="DIR",
                   help="also write the Markdown tables there (e.g. docs/results/table3), each via a "
                        "temporary file and a rename; report tables there that this report no longer "
                        "makes are removed")


def run(args) -> int:
    from ..report import build_report, publish_tables

    rep = build_report(args.experiment, out_dir=args.out, tracking_uri=args.tracking_uri,
                       log=not args.no_log, gradient_files=args.gradients, ui_url=args.ui_url,
                       split=args.split, run_ids=args.runs)
    for note in rep.notes:
        print(f"note: {note}")
    print(f"tables:  {', '.join(str(p) for p in rep.tables.values()) or 'none'}")
    if args.results_dir:
        written, removed = publish_tables(rep, args.results_dir)
        print(f"results: {', '.join(str(p) for p in written) or 'none'}")
        if removed:
            print(f"removed (no longer made by this report): {', '.join(str(p) for p in removed)}")
    print(f"figures: {', '.join(str(p) for p in rep.figures.values()) or 'none'}")
    if rep.run_id:
        print(f"logged to MLflow run {rep.run_id}")
    print(f"report:  {rep.path.resolve()}")
    return 0
