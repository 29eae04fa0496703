"""``python -m node run --config FILE``: the node agent."""

from node.cli import main

main()
