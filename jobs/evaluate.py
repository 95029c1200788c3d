"""Ray job entry point: `ray job submit -- python jobs/evaluate.py <instructedit evaluate args>`.

No logic of its own: the evaluate command does the work (use --workers N to spread batches over
the cluster's actors)."""

import sys

from instructedit.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
