"""``semvis crossmodal train | eval | search``: BEAN / DSVE-loc or SMILE (``--set model=smile``, the
ablations with ``--set attention=mean|1-att|no-conv|no-softmax``): text <-> image retrieval with
localization. Data come from the config (``--set data=karpathy --set karpathy_json=... --set
image_root=...``, or the seeded synthetic scenes: ``--set n_train=400 --set image_size=64``); a
checkpoint remembers its data, so ``eval`` and ``search`` need only the checkpoint."""
from __future__ import annotations

import argparse
import os

from ._train import add_train_options, trainer_from_args
from ._common import (Printer, UserError, add_hidden_alias, add_json, add_out, add_quiet, add_verb,
                      check_input_file, check_output_dir, check_output_file, user_errors)

NAME = "crossmodal"
_PRESETS = ("synthetic", "paper")


def _threads(cfg) -> None:
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)


def _checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="a checkpoint written by `semvis crossmodal train`")
    p.add_argument("--checkpoint", dest="checkpoint_opt", help=argparse.SUPPRESS)  # the old spelling


def _checkpoint_path(args: argparse.Namespace) -> str:
    path = args.checkpoint or args.checkpoint_opt
    if not path:
        raise UserError("a checkpoint is required (the first argument)")
    return check_input_file(path, "checkpoint")


def _load(args: argparse.Namespace):
    """(model, vocab, validated config of the checkpoint with --set overrides)."""
    from ..config import parse_overrides
    from ..models.crossmodal import load_crossmodal_checkpoint
    from ..train.crossmodal import CrossModalConfig

    path = _checkpoint_path(args)
    with user_errors(FileNotFoundError, ValueError):
        model, vocab, ck = load_crossmodal_checkpoint(path)
    cfg = dict(ck.get("config") or {})
    if "checkpoint_dir" in cfg:  # checkpoints written before the common tag scheme
        cfg["out_dir"] = cfg.pop("checkpoint_dir")
    cfg.update(parse_overrides(args.set))
    cfg["out_dir"] = None  # eval and search never write checkpoints
    config = CrossModalConfig.from_dict(cfg)
    _threads(config)
    return model, vocab, config


def _data(config, split: str):
    from ..train.crossmodal import crossmodal_data

    with user_errors(FileNotFoundError, ValueError):
        return crossmodal_data(config, split)


# ------------------------------------------------------------------ train
def _train_args(p: argparse.ArgumentParser) -> None:
    add_train_options(p, _PRESETS, "synthetic", "CrossModalConfig")
    p.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")


def _train(args: argparse.Namespace) -> int:
    from ..eval.crossmodal import evaluate_crossmodal
    from ..train.crossmodal import CrossModalConfig, CrossModalTrainer

    out = Printer(args)

    def build(cfg):
        _threads(cfg)
        return CrossModalTrainer.from_config(cfg)

    # on --resume the Trainer sets the config's threads itself
    tr = trainer_from_args(CrossModalConfig, CrossModalTrainer, args, build=build)
    out.record({"config": tr.config.to_dict()}, f"training {tr.config.model} for {tr.config.epochs} epochs "
               f"(epoch {tr.epoch} now) on {len(tr.train_set)} images")
    tr.fit(log=out.record)
    if not args.no_eval:
        test = _data(tr.config, "test")
        out.record(evaluate_crossmodal(tr.model, tr.vocab, test, size=tr.config.test_size))
    return 0


# ------------------------------------------------------------------ eval
def _eval_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_arg(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--folds", type=int, default=1, help="5 for the COCO 5-fold 1k protocol")
    p.add_argument("--k", type=int, default=None, help="heatmap dimensions (default: 180/2400 of d)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a field of the checkpoint's config (data, test_size, threads)")
    add_out(p, "also write the metrics to this JSON file")
    add_json(p)
    add_quiet(p)


def _eval(args: argparse.Namespace) -> int:
    """R@K / MedR both ways (re-ranking on and off) and the pointing game."""
    import json

    from ..eval.crossmodal import evaluate_crossmodal

    out = Printer(args)
    if args.out:
        check_output_file(args.out)
    if args.folds < 1:
        raise UserError(f"--folds must be >= 1, got {args.folds}")
    if args.k is not None and args.k < 1:
        raise UserError(f"--k must be >= 1, got {args.k}")
    model, vocab, cfg = _load(args)
    data = _data(cfg, args.split)
    with user_errors(ValueError):
        res = evaluate_crossmodal(model, vocab, data, size=cfg.test_size, folds=args.folds, heatmap_k=args.k)
    out.record(res)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


# ------------------------------------------------------------------ search
def _search_args(p: argparse.ArgumentParser) -> None:
    _checkpoint_arg(p)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--text", action="append", default=[], help="a caption query (repeatable)")
    p.add_argument("--image", type=int, action="append", default=[], help="an image query: index in the split")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--rerank", action="store_true", help="S_IR / S_CR re-ranking")
    p.add_argument("--k", type=int, default=None, help="heatmap dimensions (default: 180/2400 of d)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override a field of the checkpoint's config (data, test_size, threads)")
    add_out(p, "folder for heatmap overlays of the top image of each text query (none if not given)")
    p.add_argument("--heatmap-dir", dest="heatmap_dir", help=argparse.SUPPRESS)  # the old spelling of --out
    add_json(p)
    add_quiet(p)


def _search(args: argparse.Namespace) -> int:
    """Text -> images and image -> texts, optionally re-ranked; heatmaps of the top images."""
    from ..models.crossmodal import default_heatmap_k, encode_captions
    from ..models.localization import heatmap_points, text_heatmap
    from ..search.crossmodal import index_captioned_images

    out = Printer(args)
    outdir = args.out or args.heatmap_dir
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    if not args.text and not args.image:
        raise UserError("give at least one --text or --image query")
    if outdir:
        check_output_dir(outdir)
    model, vocab, cfg = _load(args)
    from ..models.crossmodal import is_region_model

    region = is_region_model(model)
    if region and outdir:
        raise UserError("-o: heatmap overlays need a BEAN model (SMILE grounds phrases in regions: "
                        "see `semvis crossmodal eval`'s pointing game)")
    data = _data(cfg, args.split)
    for i in args.image:
        if not 0 <= i < len(data):
            raise UserError(f"--image {i}: the {args.split} split has images 0..{len(data) - 1}")
    with user_errors(ValueError):
        index, caps, _, G = (index_captioned_images(model, vocab, data, cfg.test_size) + (None,) if region else
                             index_captioned_images(model, vocab, data, cfg.test_size, maps=True))
        q = encode_captions(model, vocab, args.text) if args.text else None
    res = {}
    if args.text:
        D, I = index.text_to_image(q, args.top, rerank=args.rerank)
        res["text_to_image"] = [{"query": t, "images": [data.ids[int(i)] for i in I[n] if i >= 0],
                                 "scores": [round(float(s), 4) for s, i in zip(D[n], I[n]) if i >= 0]}
                                for n, t in enumerate(args.text)]
        if outdir:
            from ..viz import heatmap_overlay, write_png

            A = model.image.fc.weight.detach().float()
            k = args.k or default_heatmap_k(A.shape[0])
            for n, t in enumerate(args.text):
                i = int(I[n, 0])
                im = data.image(i)
                H = text_heatmap(G[i], A, q[n], k)[0]
                # the map covers the whole image whatever the test resize: points in its pixels
                pt = heatmap_points(H, (im.shape[1], im.shape[0]))
                path = os.path.join(outdir, f"query{n}_image{data.ids[i]}.png")
                write_png(path, heatmap_overlay(im, H.numpy(), point=pt.tolist()))
                res["text_to_image"][n]["heatmap"] = path
    if args.image:
        D, I = index.image_to_text(index.image_emb[list(args.image)], args.top, rerank=args.rerank)
        res["image_to_text"] = [{"image": data.ids[int(i)], "captions": [caps[int(j)] for j in I[n] if j >= 0],
                                 "scores": [round(float(s), 4) for s, j in zip(D[n], I[n]) if j >= 0]}
                                for n, i in enumerate(args.image)]
    out.record(res)
    return 0


def register(subparsers) -> None:
    """Adds ``semvis crossmodal train|eval|search`` (and the hidden old spellings)."""
    system = subparsers.add_parser(NAME, help="BEAN / DSVE-loc: text <-> image retrieval with localization")
    verbs = system.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, build, func, hlp in (
            ("train", _train_args, _train, "train BEAN / DSVE-loc, then evaluate on the test split"),
            ("eval", _eval_args, _eval, "R@K / MedR both ways (re-ranking on and off) and the pointing game"),
            ("search", _search_args, _search, "text -> images and image -> texts, optional re-ranking and heatmaps")):
        build(add_verb(verbs, verb, func, hlp, command=f"{NAME} {verb}"))
        add_hidden_alias(subparsers, f"{verb}-{NAME}", build, func, f"{NAME} {verb}")
