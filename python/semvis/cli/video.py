"""``semvis video index | search | demo`` (and ``semvis demo``): image-to-video search. Uses only
the public ``semvis.video`` API (``VideoIndex`` add/build/search/save/load, ``run_demo``) and
:mod:`semvis.search.video`."""
from __future__ import annotations

import argparse
import os
import sys

from ._common import (Printer, UserError, add_json, add_out, add_quiet, add_verb, check_input_file,
                      check_output_dir, check_output_file, one_line, user_errors)

NAME = "video"


def _video():
    try:
        import semvis.video as video
    except ImportError as e:
        raise UserError(f"image-to-video search needs OpenCV: pip install \"semvis[video]\" ({e})") from None
    return video


def _nonneg(name: str, v, lo: int = 0):
    if v is not None and v < lo:
        raise UserError(f"--{name} must be >= {lo}, got {v}")


# ------------------------------------------------------------------ index
def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="video files (mp4/avi/mkv...) or folders of frames")
    add_out(p, "index file to write (e.g. index.svx; required); checked before indexing")
    p.add_argument("--output", dest="out", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--method", default="aggregation", choices=["aggregation", "all", "keyframes", "global"])
    p.add_argument("--global-aggregator", choices=["mean", "recurrent"], default="mean",
                   help="--method global: shot embedding by mean pooling or the trained temporal encoder")
    p.add_argument("--global-model", default=None,
                   help="--method global: a `semvis video train-global` checkpoint (needed for recurrent)")
    p.add_argument("--step", type=int, default=1, help="index one frame in STEP (default 1)")
    p.add_argument("--backtracks", type=int, default=50, help="default kd-tree budget B stored in the index")
    p.add_argument("--verify", type=int, default=5,
                   help="shots verified geometrically per query (default 5; 0: the paper's votes only)")
    p.add_argument("--min-track-len", type=int, default=8,
                   help="tracks of at least this many frames give a key feature (default 8, the paper's)")
    p.add_argument("--id-from", choices=["name", "path"], default="name",
                   help="video id: the file name without extension (default) or the path as given")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="index on Ray (needs semvis[distributed]): one task per video, into shards; OUT is then "
                        "a folder (shards + manifest.json; an interrupted run resumes). Without ADDRESS a local "
                        "Ray instance; 'auto' or host:port for a cluster (write --ray=ADDRESS before the paths)")
    p.add_argument("--shard-videos", type=int, default=8, help="--ray: videos per shard (default 8)")
    p.add_argument("--num-cpus", type=int, default=None, help="--ray, local instance: CPUs (default: all)")
    p.add_argument("--max-retries", type=int, default=3,
                   help="--ray: retries of a task whose worker process died (default 3)")
    add_json(p)
    add_quiet(p)


def _video_id(args, path: str) -> str:
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0] if args.id_from == "name" else path


def _index_ray(args: argparse.Namespace, video, out: Printer) -> int:
    """``--ray``: the sharded index (semvis.video.shards); failed videos are reported (status 1)."""
    from semvis.video.shards import index_sharded

    check_output_dir(args.out, "-o/--out")
    if args.method == "global":
        raise UserError("--ray: the global method is not sharded (use --method aggregation, all or keyframes)")
    _nonneg("shard-videos", args.shard_videos, 1)
    _nonneg("num-cpus", args.num_cpus, 1)
    _nonneg("max-retries", args.max_retries)
    ids = [_video_id(args, p) for p in args.paths]
    if len(set(ids)) != len(ids):
        raise UserError("two videos get the same id (use --id-from path)")

    def done(vid, info):
        if "error" in info:
            print(f"semvis video index: skipped {vid}: {info['error']}", file=sys.stderr)
            return
        out.info(f"{vid}: {info['frames']} frames, {info['shots']} shots, {info['items']} indexed features")
        if args.json:
            out.record({"video": vid, **{k: info[k] for k in ("frames", "shots", "items")}})

    with user_errors(ValueError, TypeError, ImportError, OSError):
        r = index_sharded(list(zip(ids, args.paths)), args.out, videos_per_shard=args.shard_videos, use_ray=True,
                          address=None if args.ray == "local" else args.ray, num_cpus=args.num_cpus,
                          max_retries=args.max_retries, on_video=done, method=args.method, step=args.step,
                          backtracks=args.backtracks, verify=args.verify, min_track_len=args.min_track_len)
    if len(r["failed"]) == r["videos"]:
        raise UserError("no video could be indexed")
    out.info(f"wrote {r['manifest']}: {r['shards']} shards, {r['videos'] - len(r['failed'])} videos "
             f"({r['processed']} processed now, {r['skipped']} done before), {r['seconds']:.1f} s")
    if args.json:
        out.record({"index": args.out, "manifest": r["manifest"], "shards": r["shards"],
                    "videos": r["videos"] - len(r["failed"]), "processed": r["processed"], "skipped": r["skipped"]})
    return 1 if r["failed"] else 0


def _index(args: argparse.Namespace) -> int:
    """Indexes the videos that can be read (the others are reported: status 1) and writes the index."""
    video = _video()
    out = Printer(args)
    if args.ray is None:
        check_output_file(args.out, "-o/--out")
    _nonneg("step", args.step, 1)
    _nonneg("backtracks", args.backtracks, 1)
    _nonneg("verify", args.verify)
    _nonneg("min-track-len", args.min_track_len, 1)
    for path in args.paths:
        if not os.path.exists(path):
            raise UserError(f"{path}: no such file or folder")
    if args.ray is not None:
        return _index_ray(args, video, out)
    extra = {}
    if args.method == "global":
        if args.global_model is not None:
            check_input_file(args.global_model, "--global-model")
            with user_errors(ValueError, FileNotFoundError, OSError):
                from semvis.video.global_method import load_global_model

                e = load_global_model(args.global_model)["embedder"]
            extra.update(global_width=int(e["width"]), global_image_width=int(e["image_width"]),
                         global_fps=float(e["fps"]))
        extra.update(global_aggregator=args.global_aggregator, global_model=args.global_model)
    with user_errors(ValueError, TypeError):
        idx = video.VideoIndex(method=args.method, step=args.step, backtracks=args.backtracks, verify=args.verify,
                               min_track_len=args.min_track_len, progress=not args.quiet, **extra)
    failed = 0
    for path in args.paths:
        vid = _video_id(args, path)
        try:
            info = idx.add(path, vid)
        except (video.VideoReadError, ValueError, TypeError, OSError) as e:
            failed += 1
            print(f"semvis video index: skipped {path}: {one_line(e)}", file=sys.stderr)
            continue
        out.info(f"{path}: {info['frames']} frames, {info['shots']} shots, {info['items']} indexed features")
        if args.json:
            out.record({"video": vid, "path": path, **{k: info[k] for k in ("frames", "shots", "items")}})
    if len(idx) == 0:
        raise UserError("no video could be indexed; nothing written")
    idx.build()
    with user_errors(OSError):
        idx.save(args.out)
    mem = idx.memory()
    out.info(f"wrote {args.out}: {len(idx)} videos, {mem['total'] / 2**20:.2f} MiB in memory")
    if args.json:
        out.record({"index": args.out, "videos": len(idx), "memory_bytes": int(mem["total"])})
    return 1 if failed else 0


# ------------------------------------------------------------------ search
def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="index file written by `semvis video index` (or the folder of a --ray index)")
    p.add_argument("images", nargs="+", help="query images")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--backtracks", type=int, default=None, help="kd-tree budget B (default: the index's)")
    p.add_argument("--verify", type=int, default=None,
                   help="shots verified geometrically per query (default: the index's; 0: votes only)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="a sharded (--ray) index: search its shards on Ray actors (local instance, or ADDRESS); "
                        "without --ray its shards are searched in this process")
    add_json(p)  # {"query": path, "results": [{"video", "shot", "frame", "score"}]} per query
    add_quiet(p)


def _search(args: argparse.Namespace) -> int:
    """The video, shot and frame of each photo; an unreadable photo is reported (status 1)."""
    from ..search.video import search

    video = _video()
    out = Printer(args)
    _nonneg("top", args.top, 1)
    _nonneg("backtracks", args.backtracks, 1)
    _nonneg("verify", args.verify)
    sharded = os.path.isfile(os.path.join(args.index, "manifest.json")) or os.path.basename(args.index) == "manifest.json"
    if not sharded:
        check_input_file(args.index, "index")
        if args.ray is not None:
            raise UserError(f"--ray: {args.index} is not a sharded index (a folder written by `video index --ray`)")
    with user_errors(ValueError, FileNotFoundError, OSError, ImportError):
        if sharded:
            from semvis.video.shards import ShardedIndex

            idx = ShardedIndex.open(args.index, use_ray=args.ray is not None,
                                    address=None if args.ray in (None, "local") else args.ray)
        else:
            idx = video.VideoIndex.load(args.index, progress=False)
    try:
        return _search_all(args, idx, video, out, search)
    finally:
        if sharded:
            idx.close()


def _search_all(args, idx, video, out, search) -> int:
    if args.verify is not None:
        idx.verify = args.verify
    status = 0
    for path in args.images:
        try:
            (hits,) = search(idx, path, top=args.top, backtracks=args.backtracks)
        except (video.VideoReadError, ValueError, TypeError, OSError) as e:
            msg = one_line(e)
            print(f"semvis video search: {msg if path in msg else f'{path}: {msg}'}", file=sys.stderr)
            status = 1
            continue
        rec = {"query": path, "results": [{"video": h.video, "shot": h.shot, "frame": h.frame,
                                           "score": round(h.score, 6)} for h in hits]}
        text = "\n".join([path] + [f"  {r}. {h.video}  shot {h.shot}  frame {h.frame}  score {h.score:.4f}"
                                   for r, h in enumerate(hits, 1)])
        out.record(rec, text)
    return status


# ------------------------------------------------------------------ train-global
def _train_global_args(p: argparse.ArgumentParser) -> None:
    add_out(p, "folder of the checkpoint (checkpoint.pt; required)")
    p.add_argument("--videos", type=int, default=4, help="synthetic training videos (default 4)")
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4, the thesis')")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--frame-size", default="720x405", help="synthetic frame size WxH (default 720x405)")
    p.add_argument("--embed-width", type=int, default=16, help="ResNet-18 trunk width (embedding dim = 8x)")
    p.add_argument("--image-width", type=int, default=320, help="frames resized to this width (default 320)")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    add_quiet(p)


def _train_global(args: argparse.Namespace) -> int:
    """Trains the temporal encoder (thesis ch. 6) on a synthetic corpus; writes OUT/checkpoint.pt."""
    _video()
    from ..train.global_video import GlobalVideoConfig, GlobalVideoTrainer

    out = Printer(args)
    check_output_dir(args.out, "-o/--out")
    for name in ("videos", "steps", "hidden", "embed_width"):
        _nonneg(name.replace("_", "-"), getattr(args, name), 1)
    try:
        w, h = (int(x) for x in args.frame_size.lower().split("x"))
    except ValueError:
        raise UserError(f"--frame-size must be WxH, e.g. 720x405, got {args.frame_size!r}") from None
    ck = os.path.join(args.out, "checkpoint.pt")
    with user_errors(ValueError, TypeError, FileNotFoundError, OSError):
        if args.resume:
            check_input_file(ck, "checkpoint")
            tr = GlobalVideoTrainer.resume(ck, steps=args.steps, progress=not args.quiet)
        else:
            cfg = GlobalVideoConfig(out_dir=args.out, videos=args.videos, cell=args.cell, steps=args.steps, lr=args.lr,
                                    hidden=args.hidden, frame_width=w, frame_height=h, embed_width=args.embed_width,
                                    image_width=args.image_width, checkpoint_every=args.checkpoint_every,
                                    seed=args.seed, progress=not args.quiet)
            tr = GlobalVideoTrainer(cfg)
        hist = tr.fit()
    last = hist[-1]["loss"] if hist else float("nan")
    out.info(f"wrote {ck}: {tr.step} steps, {len(tr.shots)} training shots, last loss {last:.4f}")
    return 0


# ------------------------------------------------------------------ demo
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--videos", type=int, default=3, help="synthetic videos (default 3)")
    p.add_argument("--queries", type=int, default=40, help="phone-photo queries (default 40)")
    p.add_argument("--seed", type=int, default=0)
    add_out(p, "folder of the HTML report (default ./semvis_demo)", default="semvis_demo")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    add_quiet(p)


def _demo(args: argparse.Namespace) -> int:
    """Image-to-video search end to end on a synthetic corpus (a minute or two)."""
    _nonneg("videos", args.videos, 1)
    _nonneg("queries", args.queries, 1)
    _nonneg("seed", args.seed)
    if not args.no_report:
        check_output_dir(args.out)
    _video()
    from semvis.video.demo import run_demo

    run_demo(n_videos=args.videos, n_queries=args.queries, seed=args.seed,
             out_dir=None if args.no_report else args.out, progress=not args.quiet)
    return 0


def register(subparsers) -> None:
    """Adds ``semvis video index|search|train-global|demo``."""
    system = subparsers.add_parser(NAME, help="image-to-video search: index videos, search with photos")
    verbs = system.add_subparsers(dest="verb", metavar="VERB", required=True)
    _index_args(add_verb(verbs, "index", _index, "index video files or folders of frames", command=f"{NAME} index"))
    _search_args(add_verb(verbs, "search", _search, "find the video, shot and frame shown in photos",
                          command=f"{NAME} search"))
    _train_global_args(add_verb(verbs, "train-global", _train_global,
                                "train the recurrent shot aggregator (global method) on a synthetic corpus",
                                command=f"{NAME} train-global"))
    _demo_args(add_verb(verbs, "demo", _demo, "end to end on a synthetic corpus (a minute or two)",
                        command=f"{NAME} demo"))


def register_demo(subparsers) -> None:
    """``semvis demo``: the main job, kept at the top level."""
    p = subparsers.add_parser("demo", help="image-to-video search end to end on a synthetic corpus (a minute or two)")
    _demo_args(p)
    p.set_defaults(func=_demo, command="demo")
