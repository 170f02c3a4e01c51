"""``semvis text2art train | eval | search``: cross-modal retrieval of paintings by their comments
and titles (SemArt, thesis ch. 7)."""
from __future__ import annotations

import argparse
import time

import torch

from ._common import Printer, UserError, add_verb, check_input_file, user_errors
from ._train import add_eval_options, add_train_options, trainer_from_args, trainer_from_checkpoint

NAME = "text2art"


def _train(args: argparse.Namespace) -> int:
    """Trains CML (or AMD with ``--set attribute=TYPE``) and reports the test metrics."""
    from ..train.text2art import Text2ArtConfig, Text2ArtTrainer

    out = Printer(args)
    tr = trainer_from_args(Text2ArtConfig, Text2ArtTrainer, args)
    out.info(f"data: {tr.root} ({len(tr.splits['train'])} train / {len(tr.splits['test'])} test paintings, "
             f"text features {tr.text_encoder.dim})")
    t0 = time.time()
    tr.fit(log=lambda rec: out.record(rec) if args.json else None)
    ev = tr.evaluate("test")
    out.record({"epochs": tr.epoch, "seconds": time.time() - t0, **ev})
    return 0


def _eval(args: argparse.Namespace) -> int:
    """R@1/5/10 and median rank both ways on a split (the SemArt protocol)."""
    from ..train.text2art import Text2ArtTrainer

    out = Printer(args)
    tr = trainer_from_checkpoint(Text2ArtTrainer, args)
    with user_errors(ValueError):
        ev = tr.evaluate(args.split)
    out.record({"checkpoint": args.checkpoint, "split": args.split, **ev})
    return 0


def _search(args: argparse.Namespace) -> int:
    """Paintings of a split for a text (comment, optional title), or texts for a painting image."""
    from ..train.text2art import Text2ArtTrainer, _load
    from ..data.semart import SemArtItem

    out = Printer(args)
    if (args.text is None) == (args.image is None):
        raise UserError("give exactly one of --text or --image")
    if args.k < 1:
        raise UserError(f"-k must be >= 1, got {args.k}")
    tr = trainer_from_checkpoint(Text2ArtTrainer, args)
    with user_errors(ValueError):
        img, txt = tr.embed(args.split)
    items = tr.splits[args.split]
    with torch.no_grad():
        if args.text is not None:
            q = tr.model.embed_texts(tr.text_encoder.transform([args.text], [args.title or ""]).to(tr.device)).cpu()
            db, names = img, [it.image_file for it in items]
        else:
            check_input_file(args.image, "--image")
            probe = SemArtItem("", "", "", "", "", "", "", "", "", args.image)
            with user_errors(ValueError, OSError):
                x = _load(probe, tr.config.image_size, None)[None]
            q = tr.model.embed_images(x.to(tr.device)).cpu()
            db, names = txt, [f"{it.title} ({it.author}): {it.description[:80]}" for it in items]
    S = (q @ db.t())[0]
    k = min(args.k, S.numel())
    D, I = torch.sort(S, descending=True, stable=True)
    for r in range(k):
        out.record({"rank": r + 1, "score": float(D[r]), "index": int(I[r]), "item": names[int(I[r])]},
                   f"{r + 1:3d}  {float(D[r]):.4f}  {names[int(I[r])]}")
    return 0


def register(subparsers) -> None:
    """Adds ``semvis text2art train|eval|search``."""
    from ..train.text2art import Text2ArtConfig

    system = subparsers.add_parser(NAME, help="text <-> painting retrieval on SemArt-format data (CML / AMD)")
    verbs = system.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_train_options(add_verb(verbs, "train", _train, "train Text2Art (synthetic SemArt set by default)",
                               command=f"{NAME} train"), tuple(Text2ArtConfig.PRESETS), "synthetic", "Text2ArtConfig")
    p = add_verb(verbs, "eval", _eval, "R@K and median rank both ways", command=f"{NAME} eval")
    add_eval_options(p, "semvis text2art train")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p = add_verb(verbs, "search", _search, "paintings for a text, or texts for a painting", command=f"{NAME} search")
    add_eval_options(p, "semvis text2art train")
    p.add_argument("--text", help="a comment (the query text)")
    p.add_argument("--title", help="a title to go with --text")
    p.add_argument("--image", help="a painting image (the query)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test", help="the collection searched")
    p.add_argument("-k", type=int, default=10, help="results (default 10)")
