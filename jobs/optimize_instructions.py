"""Ray job entry: `ray job submit -- python jobs/optimize_instructions.py --task recent ...`.

Same arguments as `instructedit optimize-instructions`; no logic of its own.
"""

import sys

from instructedit.cli import main

if __name__ == "__main__":
    sys.exit(main(["optimize-instructions", *sys.argv[1:]]))
