"""The ``semvis`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Dict, List, Optional


def _cmd_info(args: argparse.Namespace) -> int:
    import semvis_ext

    print(json.dumps(semvis_ext.info(), indent=2))
    return 0


def _semantic_config(args: argparse.Namespace):
    from semvis.train import SemanticConfig

    over = {}
    for kv in args.set or []:
        if "=" not in kv:
            raise SystemExit(f"--set expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        try:
            over[k] = json.loads(v)
        except json.JSONDecodeError:
            over[k] = v
    if args.config:
        base = SemanticConfig.from_file(args.config).to_dict()
    elif args.preset == "synthetic":
        base = SemanticConfig.synthetic_preset().to_dict()
    else:
        base = SemanticConfig().to_dict()
    return SemanticConfig.from_dict({**base, **over})


def _cmd_train_semantic(args: argparse.Namespace) -> int:
    """semvis train-semantic: trains (or resumes) one model, then evaluates it on the val split."""
    from semvis.train import ConfigError, SemanticTrainer, implementations

    try:
        if args.resume:
            tr = SemanticTrainer.resume(args.resume)
        else:
            tr = SemanticTrainer(_semantic_config(args))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"semvis train-semantic: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"config": tr.cfg.to_dict(), "implementations": implementations()}, indent=1))
    tr.fit()
    ev = tr.evaluate("val")
    out = {"steps": tr.step, "ndcg_auc": ev["ndcg_auc"], "pcc_auc": ev["pcc_auc"]}
    if tr.uses_text:
        vt = tr.evaluate("val", query_mode="V+T")
        out.update({"ndcg_auc_vt": vt["ndcg_auc"], "pcc_auc_vt": vt["pcc_auc"]})
    print(json.dumps(out))
    return 0


def _cmd_eval_semantic(args: argparse.Namespace) -> int:
    """semvis eval-semantic: the Table-2 comparison (trains the models it compares)."""
    from semvis.train import ConfigError
    from semvis.train.experiments import format_table2, table2

    try:
        cfg = _semantic_config(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"semvis eval-semantic: {e}", file=sys.stderr)
        return 2
    rows = table2(cfg, n_triplets=args.triplets)
    print(format_table2(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": cfg.to_dict(), "rows": rows}, f, indent=1)
    return 0


def _cmd_search_semantic(args: argparse.Namespace) -> int:
    """semvis search-semantic: top results of a test image (optionally with text modifiers) and
    Grad-CAM heatmaps of each (query, result) pair."""
    import os

    import numpy as np

    from semvis.models.grounding import compose_query, grad_cam_pair, heatmap_overlay, write_png
    from semvis.train import SemanticTrainer

    try:
        tr = SemanticTrainer.resume(args.checkpoint, progress=False)
    except (FileNotFoundError, ValueError) as e:
        print(f"semvis search-semantic: {e}", file=sys.stderr)
        return 2
    test = tr.data.split(args.split)
    if not 0 <= args.query < len(test):
        print(f"semvis search-semantic: --query must be in [0, {len(test)})", file=sys.stderr)
        return 2
    phi = tr.embed(test)
    q = phi[args.query]
    if args.plus or args.minus:
        if tr.text is None:
            print("semvis search-semantic: text modifiers need a joint (V+T) model", file=sys.stderr)
            return 2
        try:
            q = compose_query(q, tr.text, tr.data.tfidf, args.plus or [], args.minus or [])
        except ValueError as e:
            print(f"semvis search-semantic: {e}", file=sys.stderr)
            return 2
    s = phi @ q
    s[args.query] = -float("inf")
    top = s.topk(args.top).indices.tolist()
    os.makedirs(args.out, exist_ok=True)
    imgs = tr.data.load([int(test[args.query])] + [int(test[j]) for j in top])
    qimg = imgs[0].permute(1, 2, 0).numpy()
    write_png(os.path.join(args.out, "query.png"), qimg)
    results = []
    for r, (j, im) in enumerate(zip(top, imgs[1:])):
        ma, mb, dims = grad_cam_pair(tr.model, imgs[0], im)
        rimg = im.permute(1, 2, 0).numpy()
        write_png(os.path.join(args.out, f"result{r + 1}.png"),
                  np.concatenate([heatmap_overlay(qimg, ma.numpy()), heatmap_overlay(rimg, mb.numpy())], 1))
        results.append({"rank": r + 1, "image": int(test[j]), "score": float(s[j]), "dims": dims.tolist(),
                        "captions": tr.data.captions[int(test[j])][:3]})
    print(json.dumps({"query": int(test[args.query]), "captions": tr.data.captions[int(test[args.query])][:3],
                      "results": results}, indent=1))
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "search-semantic": _cmd_search_semantic,
    "info": _cmd_info,
    "train-semantic": _cmd_train_semantic,
    "eval-semantic": _cmd_eval_semantic,
}

from . import cli_crossmodal as _cli_crossmodal  # noqa: E402  (cheap: imports torch lazily)

COMMANDS.update(_cli_crossmodal.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semvis", description="Semantic and multi-modal visual search.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="how semvis_ext was built (version, CUDA, threads)")
    _cli_crossmodal.register(sub)
    for name, hlp in (("train-semantic", "train the caption-supervised R-MAC embedding (Gordo & Larlus)"),
                      ("eval-semantic", "Table-2 comparison: baseline, tf-idf oracle, (V,V), (V+T,V), (V+T,V+T)")):
        sp = sub.add_parser(name, help=hlp)
        sp.add_argument("--config", help="a .json or .toml SemanticConfig file")
        sp.add_argument("--preset", choices=("synthetic", "paper"), default="synthetic",
                        help="defaults when no --config is given (default: synthetic, 2-core CPU scale)")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config field (JSON value), e.g. --set steps=200 --set objective=joint")
        if name == "train-semantic":
            sp.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint")
        else:
            sp.add_argument("--triplets", type=int, default=1000, help="simulated user-study triplets")
            sp.add_argument("--json", help="also write the rows to this JSON file")
    sp = sub.add_parser("search-semantic", help="search with a trained model; Grad-CAM heatmaps of the pairs")
    sp.add_argument("checkpoint", help="a checkpoint written by train-semantic")
    sp.add_argument("--split", default="test", choices=("train", "val", "test"))
    sp.add_argument("--query", type=int, default=0, help="position of the query image in the split")
    sp.add_argument("--plus", nargs="*", help="words added to the query (joint models)")
    sp.add_argument("--minus", nargs="*", help="words subtracted from the query (joint models)")
    sp.add_argument("--top", type=int, default=5)
    sp.add_argument("--out", default="semvis_search", help="folder for query.png and result<k>.png")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
