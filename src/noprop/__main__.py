"""``python -m noprop`` is the ``noprop`` command."""

import sys

from noprop.cli import main

sys.exit(main())
