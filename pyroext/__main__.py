"""``python -m pyroext`` runs the command line."""

import sys

from pyroext.cli import main

sys.exit(main())
