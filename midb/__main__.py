"""``python -m midb``: the midb administration tool (see midb.cli)."""

import sys

from midb.cli import main

sys.exit(main())
