import sys

from galaxalign.cli import main

sys.exit(main())
