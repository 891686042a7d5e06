"""``python -m fgext``: the launcher's entry point; ``run`` takes a path that imports nothing heavy."""

import sys

if sys.argv[1:] == ["run"]:
    # The agent's cold start counts every millisecond: skip argparse and go straight to the bootstrap.
    from fgext._bootstrap import main_run

    sys.exit(main_run())

from fgext._cli import main

sys.exit(main())
