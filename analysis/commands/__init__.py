"""`instructedit report` and `instructedit analyze`: CLI commands of the analysis layer, found by
the platform's CLI through the entry-point group `instructedit.commands` (pyproject.toml)."""
