import sys

from finsent.cli import main

sys.exit(main())
