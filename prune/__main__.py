"""``python -m prune ...`` runs the ``prune`` command. Usage: ``python -m prune --model resnet20 --speedup 2``."""
import sys

from prune.cli import main

sys.exit(main())
