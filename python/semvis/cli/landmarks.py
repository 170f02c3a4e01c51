"""``semvis landmarks eval | synth``: the landmark-retrieval pipeline of seed 001 on a dataset in
the revisitop layout (``<root>/<name>/jpg`` + ``gnd_<name>.pkl``), evaluated with the revisited
Easy / Medium / Hard protocol (plain R-MAC, + learned or PCA whitening, + alpha-QE, + diffusion),
and the synthetic landmark set that lets it run offline."""
from __future__ import annotations

import argparse
import os

from ._common import Printer, UserError, add_json, add_out, add_quiet, add_verb, check_output_dir, user_errors

NAME = "landmarks"


def _dataset_dir(path: str, option: str) -> str:
    d = os.path.abspath(path)
    name = os.path.basename(d)
    if not os.path.isfile(os.path.join(d, f"gnd_{name}.pkl")):
        raise UserError(f"{option}: {path} is not a revisitop-layout dataset (no gnd_{name}.pkl in it)")
    return d


def _eval(args: argparse.Namespace) -> int:
    """Runs the pipeline and prints one row per stage (mAP E / M / H in %)."""
    from ..eval.landmarks import format_results, run_pipeline

    out = Printer(args)
    data = _dataset_dir(args.dataset, "dataset")
    wd = _dataset_dir(args.whiten_dataset, "--whiten-dataset") if args.whiten_dataset else None
    with user_errors(FileNotFoundError, ValueError):
        res = run_pipeline(data, whiten_dataset=wd, backbone=args.backbone, width=args.width, levels=args.levels,
                           qe_n=args.qe_n, qe_alpha=args.qe_alpha, diffusion_k=args.diffusion_k, seed=args.seed)
    for stage, r in res.items():
        rec = {"stage": stage, **{f"map_{p}": r[p].map for p in ("easy", "medium", "hard")},
               **{f"mp@10_{p}": float(r[p].mpr[-1]) for p in ("easy", "medium", "hard")}}
        out.record(rec, f"{stage:12s} " + format_results(r, os.path.basename(data)).splitlines()[0])
    return 0


def _synth(args: argparse.Namespace) -> int:
    """Writes a synthetic landmark set (and, with --train, a disjoint one for the whitening)."""
    from ..data.landmarks import write_synthetic_landmarks

    out = Printer(args)
    root = check_output_dir(args.out)
    with user_errors(ValueError, ImportError):
        d = write_synthetic_landmarks(root, args.name, n_landmarks=args.landmarks, views=args.views,
                                      distractors=args.distractors, seed=args.seed)
        rec = {"dataset": d}
        if args.train:
            rec["whiten_dataset"] = write_synthetic_landmarks(root, args.name + "_train", n_landmarks=30, views=12,
                                                              queries=1, distractors=0, seed=args.seed + 1)
    out.record(rec)
    return 0


def register(subparsers) -> None:
    """Adds ``semvis landmarks eval|synth``."""
    system = subparsers.add_parser(NAME, help="landmark retrieval (R-MAC, whitening, QE, diffusion; revisited mAP)")
    verbs = system.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = add_verb(verbs, "eval", _eval, "mAP E/M/H of plain / +whitening / +alpha-QE / +diffusion on a dataset",
                 command=f"{NAME} eval")
    p.add_argument("dataset", help="dataset folder <root>/<name> holding jpg/ and gnd_<name>.pkl")
    p.add_argument("--whiten-dataset", metavar="DIR", help="labelled set for the learned whitening (default: PCA)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--qe-n", type=int, default=2)
    p.add_argument("--qe-alpha", type=float, default=3.0)
    p.add_argument("--diffusion-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    add_json(p)
    add_quiet(p)
    s = add_verb(verbs, "synth", _synth, "write a synthetic landmark set in the revisitop layout",
                 command=f"{NAME} synth")
    add_out(s, "root folder the dataset folder is written into (required)")
    s.add_argument("--name", default="rsynth")
    s.add_argument("--landmarks", type=int, default=8)
    s.add_argument("--views", type=int, default=24)
    s.add_argument("--distractors", type=int, default=60)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--train", action="store_true", help="also write <name>_train for the learned whitening")
    add_json(s)
    add_quiet(s)
