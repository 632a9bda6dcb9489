import sys

from parkgate.cli import main

sys.exit(main())
