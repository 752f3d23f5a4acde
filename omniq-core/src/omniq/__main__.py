"""``python -m omniq``: the same as the ``omniq`` command."""

import sys

from omniq.cli import main

sys.exit(main())
