"""``python -m riskengine margin DOC.json``: see ``riskengine.core.cli`` (no Django needed)."""

import sys

from riskengine.core.cli import main

if __name__ == "__main__":
    sys.exit(main())
