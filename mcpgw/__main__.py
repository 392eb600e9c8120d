"""``python -m mcpgw``: the same command line as ``mcpgw``."""

import sys

from mcpgw.gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
