"""``python -m riskengine margin DOC.json``: see ``riskengine.core.cli`` (no Django needed)."""

import os
import sys

from riskengine.core.cli import main

if __name__ == "__main__":
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: the output is incomplete, say so by the exit code
        code = code or 1
    # The result is written: leave without tearing the interpreter down (freeing the document's
    # ~10^5 objects and unloading numpy and scipy take a tenth of a second and change nothing).
    os._exit(code)
