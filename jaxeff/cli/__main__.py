import sys

from jaxeff.cli import main

sys.exit(main())
