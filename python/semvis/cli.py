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

    idx = VideoIndex(method=args.method, step=args.step, backtracks=args.backtracks, progress=not args.quiet)
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


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {"info": _cmd_info, "demo": _cmd_demo, "video": _cmd_video}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="semvis", description="Semantic and multi-modal visual search.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="how semvis_ext was built (version, CUDA, threads)")
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
    vi.add_argument("--id-from", choices=["name", "path"], default="name",
                    help="video id: the file name without extension (default) or the path as given")
    vi.add_argument("--quiet", action="store_true", help="no progress bars")
    vq = vs.add_parser("search", help="find the video, shot and frame shown in photos")
    vq.add_argument("index", help="index file written by `semvis video index`")
    vq.add_argument("images", nargs="+", help="query images")
    vq.add_argument("--top", type=int, default=5)
    vq.add_argument("--backtracks", type=int, default=None, help="kd-tree budget B (default: the index's)")
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
