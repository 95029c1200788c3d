"""Ray job entry point: `ray job submit -- python jobs/study.py NAME <instructedit study args>`.

No logic of its own: the study command does the work. On a cluster, give --tracking-uri an
http:// MLflow server and --storage a path every node sees, so trials and resumes find their state."""

import sys

from instructedit.cli import main

if __name__ == "__main__":
    sys.exit(main(["study", *sys.argv[1:]]))
