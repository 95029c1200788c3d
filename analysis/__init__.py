"""Results from MLflow -> the paper's tables and figures, and one HTML report.

Reads tracked runs through `instructedit.tracking` only; never imports torch or the editor.
Modules: runs (tidy table), tables, figures, pca, gradients (arrays on disk), report.
"""
