"""Ray job entry point: `instructedit submit edit ...` or `ray job submit -- python jobs/edit.py ...`.

The same arguments as `instructedit edit`; no logic of its own.
"""

import sys

from instructedit.cli import main

if __name__ == "__main__":
    sys.exit(main(["edit", *sys.argv[1:]]))
