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

    from semvis.models.grounding import compose_query, grad_cam_pair
    from semvis.viz import heatmap_overlay, write_png
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from semvis.video.demo import run_demo

    run_demo(n_videos=args.videos, n_queries=args.queries, seed=args.seed,
             out_dir=None if args.no_report else args.out, progress=not args.quiet)
    return 0


def _cmd_video(args: argparse.Namespace) -> int:
    if args.video_command == "index":
        return _video_index(args)
    return _video_search(args)


def _video_index(args: argparse.Namespace) -> int:
    import os

    from semvis.video import VideoIndex, VideoReadError

    try:
        idx = VideoIndex(method=args.method, step=args.step, backtracks=args.backtracks, verify=args.verify,
                         min_track_len=args.min_track_len, progress=not args.quiet)
    except ValueError as e:
        print(f"semvis video index: {e}", file=sys.stderr)
        return 2
    failed = 0
    for path in args.paths:
        vid = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] if args.id_from == "name" else path
        try:
            info = idx.add(path, vid)
        except (VideoReadError, ValueError, TypeError) as e:
            failed += 1
            print(f"semvis video index: skipped {path}: {e}", file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{path}: {info['frames']} frames, {info['shots']} shots, {info['items']} indexed features",
                  file=sys.stderr)
    if len(idx) == 0:
        print("semvis video index: no video could be indexed; nothing written", file=sys.stderr)
        return 1
    idx.build()
    idx.save(args.output)
    mem = idx.memory()
    print(f"wrote {args.output}: {len(idx)} videos, {mem['total'] / 2**20:.2f} MiB in memory", file=sys.stderr)
    return 1 if failed else 0


def _video_search(args: argparse.Namespace) -> int:
    from semvis.video import VideoIndex, VideoReadError

    try:
        idx = VideoIndex.load(args.index, progress=False)
    except (ValueError, FileNotFoundError) as e:
        print(f"semvis video search: {e}", file=sys.stderr)
        return 2
    if args.verify is not None:
        if args.verify < 0:
            print(f"semvis video search: --verify must be >= 0, got {args.verify}", file=sys.stderr)
            return 2
        idx.verify = args.verify
    status = 0
    for path in args.images:
        try:
            hits = idx.search(path, top=args.top, backtracks=args.backtracks)
        except (VideoReadError, ValueError, TypeError) as e:
            print(f"semvis video search: {path}: {e}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps({"query": path, "results": [
                {"video": h.video, "shot": h.shot, "frame": h.frame, "score": round(h.score, 6)} for h in hits]}))
        else:
            print(path)
            for r, h in enumerate(hits, 1):
                print(f"  {r}. {h.video}  shot {h.shot}  frame {h.frame}  score {h.score:.4f}")
    return status


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "info": _cmd_info,
    "demo": _cmd_demo,
    "video": _cmd_video,
    "train-semantic": _cmd_train_semantic,
    "eval-semantic": _cmd_eval_semantic,
    "search-semantic": _cmd_search_semantic,
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
    d = sub.add_parser("demo", help="image-to-video search end to end on a synthetic corpus (a minute or two)")
    d.add_argument("--videos", type=int, default=3, help="synthetic videos (default 3)")
    d.add_argument("--queries", type=int, default=40, help="phone-photo queries (default 40)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="semvis_demo", help="folder of the HTML report (default ./semvis_demo)")
    d.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    v = sub.add_parser("video", help="image-to-video search: index videos, search with photos")
    vs = v.add_subparsers(dest="video_command", metavar="SUBCOMMAND", required=True)
    vi = vs.add_parser("index", help="index video files (mp4/avi/mkv...) or folders of frames")
    vi.add_argument("paths", nargs="+", help="video files or folders of frames")
    vi.add_argument("-o", "--output", required=True, help="index file to write (e.g. index.svx)")
    vi.add_argument("--method", default="aggregation", choices=["aggregation", "all", "keyframes"])
    vi.add_argument("--step", type=int, default=1, help="index one frame in STEP (default 1)")
    vi.add_argument("--backtracks", type=int, default=50, help="default kd-tree budget B stored in the index")
    vi.add_argument("--verify", type=int, default=5,
                    help="shots verified geometrically per query (default 5; 0: the paper's votes only)")
    vi.add_argument("--min-track-len", type=int, default=8,
                    help="tracks of at least this many frames give a key feature (default 8, the paper's)")
    vi.add_argument("--id-from", choices=["name", "path"], default="name",
                    help="video id: the file name without extension (default) or the path as given")
    vi.add_argument("--quiet", action="store_true", help="no progress bars")
    vq = vs.add_parser("search", help="find the video, shot and frame shown in photos")
    vq.add_argument("index", help="index file written by `semvis video index`")
    vq.add_argument("images", nargs="+", help="query images")
    vq.add_argument("--top", type=int, default=5)
    vq.add_argument("--backtracks", type=int, default=None, help="kd-tree budget B (default: the index's)")
    vq.add_argument("--verify", type=int, default=None,
                    help="shots verified geometrically per query (default: the index's; 0: votes only)")
    vq.add_argument("--json", action="store_true",
                    help='one JSON object per query: {"query": path, "results": [{"video", "shot", "frame", "score"}]}')
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
