"""``python -m semvis`` = ``semvis`` (so that ``torchrun --nproc-per-node N -m semvis ...`` works).

Under torch.distributed the process ends through :func:`semvis.distributed.exit_process` (a
barrier, the group destroyed, then no interpreter finalization, where gloo can abort a finished
run)."""
from . import distributed
from .cli import main

distributed.exit_process(main())
