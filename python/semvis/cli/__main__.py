"""``python -m semvis.cli`` = ``semvis``."""
import sys

from . import main

sys.exit(main())
