import sys

from gximap.cli import main

sys.exit(main())
