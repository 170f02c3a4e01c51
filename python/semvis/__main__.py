"""``python -m semvis`` = ``semvis`` (so that ``torchrun --nproc-per-node N -m semvis ...`` works)."""
import sys

from .cli import main

sys.exit(main())
