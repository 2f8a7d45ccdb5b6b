"""``python -m assemble ...`` runs the ``assemble`` command. Usage: ``python -m assemble incubate --module 0 ...``."""
import sys

from assemble.cli import main

sys.exit(main())
