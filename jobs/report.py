"""Ray job entry point: `instructedit submit report ...` or `ray job submit -- python jobs/report.py ...`.

The same arguments as `instructedit report`; no logic of its own.
"""

import sys

from instructedit.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
