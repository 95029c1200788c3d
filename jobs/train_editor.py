"""Cluster entry point: `ray job submit -- python jobs/train_editor.py --config CONFIG [...]`.
The same arguments as `instructedit train`; inside a job Ray is joined through $RAY_ADDRESS."""

import sys

from instructedit.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
