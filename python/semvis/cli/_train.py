"""The train / eval preamble every trainer-backed ``semvis <system> train|eval`` shares: options,
output checks, a new run from ``--preset``/``--config``/``--set`` or a resumed one.

Under ``torchrun --nproc-per-node N -m semvis <system> train ...`` the process group is
initialised here from torchrun's environment (nccl on CUDA, gloo otherwise;
:func:`semvis.distributed.init_from_env`) before the trainer is built; every rank builds the same
run (or resumes the same checkpoint), only rank 0 prints, shows progress and writes."""
from __future__ import annotations

import argparse
from typing import Sequence

from ._common import (add_checkpoint, add_config_options, add_json, add_out, add_quiet, check_input_file,
                      check_output_dir, load_config, user_errors)

__all__ = ["add_train_options", "add_eval_options", "trainer_from_args", "trainer_from_checkpoint"]


def add_train_options(p: argparse.ArgumentParser, presets: Sequence[str], default: str, what: str) -> None:
    add_config_options(p, presets, default, what)
    add_out(p, "run folder: checkpoint.pt goes there (sets out_dir)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in CHECKPOINT")
    add_json(p)
    add_quiet(p)


def add_eval_options(p: argparse.ArgumentParser, what: str) -> None:
    add_checkpoint(p, what)
    add_json(p)
    add_quiet(p)


def trainer_from_args(config_cls, trainer_cls, args: argparse.Namespace, build=None):
    """A new trainer (config from the options; ``build(config)`` makes it, default
    ``trainer_cls(config)``) or, with ``--resume``, the saved one with the ``--set`` overrides.
    Output folders are checked before any work."""
    from ..config import parse_overrides
    from ..distributed import init_from_env

    with user_errors(ValueError):
        init_from_env()  # under torchrun (WORLD_SIZE > 1); a no-op otherwise
    if args.out:
        check_output_dir(args.out)
    fixed = {"out_dir": args.out, "progress": False if args.quiet else None}
    with user_errors(FileNotFoundError, ValueError):
        if args.resume:
            check_input_file(args.resume, "--resume")
            over = {**parse_overrides(args.set), **{k: v for k, v in fixed.items() if v is not None}}
            return trainer_cls.resume(args.resume, **over)
        cfg = load_config(config_cls, args, **fixed)
        if cfg.out_dir and not args.out:
            check_output_dir(cfg.out_dir, "--set out_dir")
        return (build or trainer_cls)(cfg)


def trainer_from_checkpoint(trainer_cls, args: argparse.Namespace):
    """The trainer saved in ``args.checkpoint`` (no progress bars, no further checkpoints)."""
    check_input_file(args.checkpoint, "checkpoint")
    with user_errors(FileNotFoundError, ValueError):
        return trainer_cls.resume(args.checkpoint, progress=False, out_dir=None)
