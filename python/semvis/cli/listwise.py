"""``semvis listwise train | eval``: the listwise AP-loss example (Revaud et al. 2019) on synthetic
patterns (formerly ``python -m semvis.train.ap_example``)."""
from __future__ import annotations

import argparse
import time

from ._train import add_train_options, trainer_from_args
from ._common import (Printer, add_checkpoint, add_json, add_quiet, add_verb, check_input_file,
                      user_errors)

NAME = "listwise"


def _train_args(p: argparse.ArgumentParser) -> None:
    add_train_options(p, ("example",), "example", "ListwiseConfig")


def _train(args: argparse.Namespace) -> int:
    """Fine-tunes the small MAC network with the AP loss; the test mAP every ``eval_every`` steps."""
    from ..train.listwise import ListwiseConfig, ListwiseTrainer

    out = Printer(args)
    tr = trainer_from_args(ListwiseConfig, ListwiseTrainer, args)
    t0 = time.time()
    m0 = tr.evaluate()
    out.record({"step": tr.step, "test_map": m0}, f"step {tr.step:4d}  test mAP {m0:.4f}")

    def log(rec):
        if "test_map" in rec:
            out.record(rec, f"step {rec['step']:4d}  loss {rec['loss']:.4f}  test mAP {rec['test_map']:.4f}")

    tr.fit(log=log)
    m = tr.evaluate_metrics()
    m1 = m["map"]
    out.record({"loss": tr.config.loss, "steps": tr.step, "map_before": m0, "map_after": m1, "r1_after": m["r1"],
                "seconds": time.time() - t0},
               f"loss {tr.config.loss}: mAP {m0:.4f} -> {m1:.4f}, R@1 {m['r1']:.1f} % in {time.time() - t0:.1f} s")
    return 0


def _eval_args(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p, "semvis listwise train")
    add_json(p)
    add_quiet(p)


def _eval(args: argparse.Namespace) -> int:
    """Exact test mAP and R@1 of a trained checkpoint on its held-out set."""
    from ..train.listwise import ListwiseTrainer

    out = Printer(args)
    check_input_file(args.checkpoint, "checkpoint")
    with user_errors(FileNotFoundError, ValueError):
        tr = ListwiseTrainer.resume(args.checkpoint, progress=False, out_dir=None)
    m = tr.evaluate_metrics()
    out.record({"checkpoint": args.checkpoint, "loss": tr.config.loss, "steps": tr.step, "test_map": m["map"],
                "test_r1": m["r1"]})
    return 0


def register(subparsers) -> None:
    """Adds ``semvis listwise train|eval``."""
    system = subparsers.add_parser(NAME, help="listwise training: AP, triplet or SoDeep losses (synthetic example)")
    verbs = system.add_subparsers(dest="verb", metavar="VERB", required=True)
    _train_args(add_verb(verbs, "train", _train, "fine-tune a small embedding (--set loss=ap|triplet|sodeep-map|sodeep-recall); test mAP goes up",
                         command=f"{NAME} train"))
    _eval_args(add_verb(verbs, "eval", _eval, "test mAP of a checkpoint", command=f"{NAME} eval"))
