"""``python -m node run --config FILE``: the node agent (no click: see node.serve)."""

import sys

from node.serve import main

sys.exit(main())
