import sys

from finsent.apps.cli import main

sys.exit(main())
