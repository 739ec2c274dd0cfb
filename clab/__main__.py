"""``python -m clab`` runs the command-line interface (see :mod:`clab.cli`)."""
import sys

from .cli import main

sys.exit(main())
