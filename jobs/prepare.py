"""Ray job entry point: `instructedit submit prepare ...` or `ray job submit -- python jobs/prepare.py ...`.

The same arguments as `instructedit prepare`; no logic of its own.
"""

import sys

from instructedit.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
