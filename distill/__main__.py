"""``python -m distill``: the ``distill`` command (also under ``accelerate launch -m distill``).

Usage: ``python -m distill --demo``
"""
import sys

from distill.cli import main

sys.exit(main())
