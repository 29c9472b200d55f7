"""``python -m rrise_sklearn`` runs the ``rrise`` command."""

import sys

from .cli import main

sys.exit(main())
