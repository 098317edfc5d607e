"""``python -m pyncette_operator run ...``: the same as the ``pyncette-operator`` console script."""

import sys

from pyncette_operator.cli import main

sys.exit(main())
