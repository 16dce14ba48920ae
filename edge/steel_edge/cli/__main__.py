"""``python -m steel_edge.cli``: the same as the ``steel-edge`` command."""

import sys

from steel_edge.cli import main

if __name__ == "__main__":
    sys.exit(main())
