"""``semvis semantic train | eval | search``: semantic retrieval trained from captions (Gordo & Larlus)."""
from __future__ import annotations

import argparse
import os

from ._train import add_train_options, trainer_from_args
from ._common import (Printer, UserError, add_checkpoint, add_config_options, add_hidden_alias, add_json, add_out,
                      add_quiet, add_verb, check_input_file, check_output_dir, check_output_file, load_config,
                      user_errors)

NAME = "semantic"
_PRESETS = ("synthetic", "paper")


def _config(args: argparse.Namespace):
    from ..train import SemanticConfig

    fixed = {}
    if getattr(args, "out", None) and args.func is _train:
        fixed["out_dir"] = args.out
    if getattr(args, "quiet", False):
        fixed["progress"] = False
    return load_config(SemanticConfig, args, **fixed)


# ------------------------------------------------------------------ train
def _train_args(p: argparse.ArgumentParser) -> None:
    add_train_options(p, _PRESETS, "synthetic", "SemanticConfig")


def _train(args: argparse.Namespace) -> int:
    """Trains (or resumes) one model, then evaluates it on the val split."""
    from ..train import SemanticConfig, SemanticTrainer, implementations

    out = Printer(args)
    tr = trainer_from_args(SemanticConfig, SemanticTrainer, args)
    out.record({"config": tr.config.to_dict(), "implementations": implementations()},
               f"training {tr.config.objective} for {tr.config.steps} steps (step {tr.step} now)")
    tr.fit()
    ev = tr.evaluate("val")
    res = {"steps": tr.step, "ndcg_auc": ev["ndcg_auc"], "pcc_auc": ev["pcc_auc"]}
    if tr.uses_text:
        vt = tr.evaluate("val", query_mode="V+T")
        res.update({"ndcg_auc_vt": vt["ndcg_auc"], "pcc_auc_vt": vt["pcc_auc"]})
    if tr.checkpoint_path():
        res["checkpoint"] = tr.checkpoint_path()
    out.record(res)
    return 0


# ------------------------------------------------------------------ eval
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="a checkpoint of `semvis semantic train` to evaluate; "
                   "without one, the Table-2 comparison (trains the models it compares)")
    p.add_argument("--split", default="val", choices=("val", "test"), help="held-out split (with a checkpoint)")
    add_config_options(p, _PRESETS, "synthetic", "SemanticConfig (Table 2)")
    p.add_argument("--triplets", type=int, default=1000, help="simulated user-study triplets (Table 2)")
    add_out(p, "also write the results to this JSON file")
    add_json(p)
    add_quiet(p)


def _eval(args: argparse.Namespace) -> int:
    """NDCG@R / PCC@R of a checkpoint, or the Table-2 comparison."""
    import json

    out = Printer(args)
    if args.out:
        check_output_file(args.out)
    if args.triplets < 1:
        raise UserError(f"--triplets must be >= 1, got {args.triplets}")
    if args.checkpoint:
        from ..train import SemanticTrainer

        check_input_file(args.checkpoint, "checkpoint")
        with user_errors(FileNotFoundError, ValueError):
            tr = SemanticTrainer.resume(args.checkpoint, progress=False)
        ev = tr.evaluate(args.split)
        res = {"checkpoint": args.checkpoint, "split": args.split, "steps": tr.step, "ndcg_auc": ev["ndcg_auc"],
               "pcc_auc": ev["pcc_auc"], "ndcg_at_r": ev["ndcg_at_r"]}
        if tr.uses_text:
            vt = tr.evaluate(args.split, query_mode="V+T")
            res.update({"ndcg_auc_vt": vt["ndcg_auc"], "pcc_auc_vt": vt["pcc_auc"]})
        out.record(res)
        doc = res
    else:
        from ..train.experiments import format_table2, table2

        cfg = _config(args)
        with user_errors(FileNotFoundError):
            rows = table2(cfg, n_triplets=args.triplets, log=(lambda *a: None) if args.json or args.quiet else print)
        if args.json:
            for name, r in rows.items():
                out.record({"method": name, **r})
        else:
            print(format_table2(rows))
        doc = {"config": cfg.to_dict(), "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


# ------------------------------------------------------------------ search
def _search_args(p: argparse.ArgumentParser) -> None:
    add_checkpoint(p, "semvis semantic train")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--query", type=int, default=0, help="position of the query image in the split")
    p.add_argument("--plus", nargs="*", default=[], help="words added to the query (joint models)")
    p.add_argument("--minus", nargs="*", default=[], help="words subtracted from the query (joint models)")
    p.add_argument("--top", type=int, default=5)
    add_out(p, "folder for query.png and result<k>.png (Grad-CAM of each pair)", default="semvis_search")
    add_json(p)
    add_quiet(p)


def _search(args: argparse.Namespace) -> int:
    """Top results of a split image (optionally with text modifiers) and Grad-CAM heatmaps of each pair."""
    import numpy as np

    from ..models.grounding import grad_cam_pair
    from ..search.semantic import SemanticSearcher
    from ..viz import heatmap_overlay, write_png

    out = Printer(args)
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    check_input_file(args.checkpoint, "checkpoint")
    check_output_dir(args.out)
    with user_errors(FileNotFoundError, ValueError):
        s = SemanticSearcher.from_checkpoint(args.checkpoint, args.split)
    if not 0 <= args.query < len(s):
        raise UserError(f"--query must be in [0, {len(s)}), got {args.query}")
    with user_errors(ValueError):
        q = s.query(args.query, args.plus, args.minus)
    D, I = s.search(q, args.top, exclude=[[args.query]])
    ids = s.image_ids
    top = [int(j) for j in I[0] if j >= 0]
    imgs = s.data.load([int(ids[args.query])] + [int(ids[j]) for j in top])
    qimg = imgs[0].permute(1, 2, 0).numpy()
    write_png(os.path.join(args.out, "query.png"), qimg)
    results = []
    for r, (j, im) in enumerate(zip(top, imgs[1:])):
        ma, mb, dims = grad_cam_pair(s.model, imgs[0], im)
        rimg = im.permute(1, 2, 0).numpy()
        write_png(os.path.join(args.out, f"result{r + 1}.png"),
                  np.concatenate([heatmap_overlay(qimg, ma.numpy()), heatmap_overlay(rimg, mb.numpy())], 1))
        results.append({"rank": r + 1, "image": int(ids[j]), "score": float(D[0, r]), "dims": dims.tolist(),
                        "captions": s.data.captions[int(ids[j])][:3]})
    out.record({"query": int(ids[args.query]), "captions": s.data.captions[int(ids[args.query])][:3],
                "results": results})
    return 0


def register(subparsers) -> None:
    """Adds ``semvis semantic train|eval|search`` (and the hidden old spellings)."""
    system = subparsers.add_parser(NAME, help="semantic retrieval trained from captions (Gordo & Larlus)")
    verbs = system.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, build, func, hlp in (
            ("train", _train_args, _train, "train (or --resume) the R-MAC embedding, then evaluate it on val"),
            ("eval", _eval_args, _eval, "NDCG/PCC of a checkpoint; without one, the Table-2 comparison"),
            ("search", _search_args, _search, "search a split with a trained model; Grad-CAM heatmaps")):
        build(add_verb(verbs, verb, func, hlp, command=f"{NAME} {verb}"))
        add_hidden_alias(subparsers, f"{verb}-{NAME}", build, func, f"{NAME} {verb}")
