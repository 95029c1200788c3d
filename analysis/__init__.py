"""Results from MLflow -> the paper's tables and figures, and one HTML report.

Reads tracked runs through `instructedit.tracking`; never imports torch or the editor, except the
editor's torch-free method registry (instructedit.editor.methods: row labels and order).
Modules: runs (tidy table), tables, cases (Table 3 from per-case artifacts), figures, pca, gradients
(arrays on disk), report.
"""
