"""``semvis simnet train | eval | search``: a learned non-metric similarity (SimNet, thesis ch. 3)
over image descriptors, used to re-rank a cosine shortlist or to score a whole database."""
from __future__ import annotations

import argparse
import time

from ._common import Printer, UserError, add_verb, user_errors
from ._train import add_eval_options, add_train_options, trainer_from_args, trainer_from_checkpoint

NAME = "simnet"


def _train(args: argparse.Namespace) -> int:
    from ..train.simnet import SimNetConfig, SimNetTrainer

    out = Printer(args)
    tr = trainer_from_args(SimNetConfig, SimNetTrainer, args)
    t0 = time.time()
    tr.fit(log=lambda rec: out.record(rec) if args.json and rec["step"] % 100 == 0 else None)
    out.record({"steps": tr.step, "seconds": time.time() - t0, "difficult_pairs": 0 if tr.hard is None
                else int(tr.hard.shape[0]), **tr.evaluate()})
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..train.simnet import SimNetTrainer

    out = Printer(args)
    tr = trainer_from_checkpoint(SimNetTrainer, args)
    out.record({"checkpoint": args.checkpoint, "steps": tr.step, **tr.evaluate()})
    return 0


def _search(args: argparse.Namespace) -> int:
    """The k test descriptors most similar to test descriptor ``--query`` under the network
    (FAISS-style: distances are SimNet scores, most similar first)."""
    from ..train.simnet import SimNetTrainer

    out = Printer(args)
    tr = trainer_from_checkpoint(SimNetTrainer, args)
    db = tr.x[tr.test_idx]
    if not 0 <= args.query < db.shape[0]:
        raise UserError(f"--query must be a test descriptor index in [0, {db.shape[0]}), got {args.query}")
    if args.k < 1:
        raise UserError(f"-k must be >= 1, got {args.k}")
    tr.model.eval()
    with user_errors(ValueError):
        D, I = tr.model.topk(db[args.query:args.query + 1], db, args.k)
    lab = tr.labels[tr.test_idx]
    for r in range(D.shape[1]):
        i = int(I[0, r])
        out.record({"rank": r + 1, "score": float(D[0, r]), "index": i, "label": int(lab[i]) if i >= 0 else None})
    return 0


def register(subparsers) -> None:
    """Adds ``semvis simnet train|eval|search``."""
    from ..train.simnet import SimNetConfig

    system = subparsers.add_parser(NAME, help="SimNet: a learned similarity over image descriptors")
    verbs = system.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_train_options(add_verb(verbs, "train", _train, "train SimNet (warm-up, supervised, difficult pairs)",
                               command=f"{NAME} train"), tuple(SimNetConfig.PRESETS), "synthetic", "SimNetConfig")
    add_eval_options(add_verb(verbs, "eval", _eval, "mAP of cosine vs SimNet re-ranking", command=f"{NAME} eval"),
                     "semvis simnet train")
    p = add_verb(verbs, "search", _search, "top-k of a test descriptor under SimNet", command=f"{NAME} search")
    add_eval_options(p, "semvis simnet train")
    p.add_argument("--query", type=int, required=True, help="index of a test descriptor")
    p.add_argument("-k", type=int, default=10, help="results (default 10)")
