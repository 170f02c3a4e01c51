"""``semvis sodeep pretrain | eval``: a learned SoDeep sorter (LSTM or CNN) trained on the synthetic
sequences of A.10.1 with the L1 rank loss (no pretrained sorter ships anywhere: this command is how
one gets a checkpoint), and Table 5.1's L1 of the handcrafted and the trained sorter on the same
synthetic test set. The checkpoint feeds the SoDeep losses (``semvis listwise train --set
loss=sodeep-recall --set sorter=CHECKPOINT``)."""
from __future__ import annotations

import argparse
import time

from ._common import Printer, UserError, add_verb
from ._train import add_eval_options, add_train_options, trainer_from_args, trainer_from_checkpoint

NAME = "sodeep"
_PRESETS = ("cpu", "paper")  # SoDeepConfig.PRESETS (not imported at parse time)


def _pretrain(args: argparse.Namespace) -> int:
    """Trains the sorter (progress bar, checkpoint every ``checkpoint_every`` steps and at the end)."""
    from ..train.sodeep import SoDeepConfig, SoDeepTrainer

    out = Printer(args)
    tr = trainer_from_args(SoDeepConfig, SoDeepTrainer, args)
    c = tr.config
    out.record({"config": c.to_dict()}, f"pretraining the {c.sorter} sorter (length {c.seq_len}) for {c.steps} steps "
               f"of {c.batch_size} sequences (step {tr.step} now)")
    t0 = time.time()

    def log(rec):
        if "test_l1" in rec:
            out.record(rec, f"step {rec['step']:5d}  train L1 {rec['loss']:.4f}  test L1 {rec['test_l1']:.4f}")

    tr.fit(log=log)
    l1 = tr.history[-1].get("test_l1") if tr.history and "test_l1" in tr.history[-1] else tr.evaluate()
    out.record({"steps": tr.step, "test_l1": l1, "seconds": time.time() - t0, "checkpoint": tr.checkpoint_path()},
               f"test L1 {l1:.4f} after {tr.step} steps ({time.time() - t0:.1f} s)"
               + (f"; checkpoint {tr.checkpoint_path()}" if tr.checkpoint_path() else ""))
    return 0


def _eval(args: argparse.Namespace) -> int:
    """Table 5.1's L1 on the synthetic test set: the handcrafted sorter and the trained one."""
    from ..train.sodeep import SoDeepTrainer

    out = Printer(args)
    if args.num is not None and args.num < 1:
        raise UserError(f"--num must be >= 1, got {args.num}")
    tr = trainer_from_checkpoint(SoDeepTrainer, args)
    c = tr.config
    num = args.num or c.eval_num
    hand = tr.evaluate_handcrafted(num)
    mine = tr.evaluate(num)
    out.record({"checkpoint": args.checkpoint, "sorter": c.sorter, "seq_len": c.seq_len, "steps": tr.step,
                "test_sequences": num, "l1_handcrafted": hand, f"l1_{c.sorter}": mine},
               f"L1 on {num} synthetic sequences of length {c.seq_len}: handcrafted (lam {c.lam:g}) {hand:.4f}, "
               f"{c.sorter} ({tr.step} steps) {mine:.4f}")
    return 0


def register(subparsers) -> None:
    """Adds ``semvis sodeep pretrain|eval``."""
    system = subparsers.add_parser(NAME, help="SoDeep: pretrain a learned sorter, L1 against the handcrafted one")
    verbs = system.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_train_options(add_verb(verbs, "pretrain", _pretrain, "train an LSTM / CNN sorter on synthetic sequences",
                               command=f"{NAME} pretrain"), _PRESETS, "cpu", "SoDeepConfig")
    p = add_verb(verbs, "eval", _eval, "L1 of the handcrafted and the trained sorter (Table 5.1)",
                 command=f"{NAME} eval")
    add_eval_options(p, "semvis sodeep pretrain")
    p.add_argument("--num", type=int, default=None, help="test sequences (default: the run's eval_num)")
