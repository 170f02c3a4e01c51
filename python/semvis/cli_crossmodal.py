"""``semvis train-crossmodal``, ``eval-crossmodal`` and ``search-crossmodal``: BEAN / DSVE-loc
from the command line (registered by :mod:`semvis.cli`).

Data come from the seeded synthetic scenes (``--synthetic N``, the default) or a Karpathy split
file (``--karpathy-json dataset_coco.json --image-root DIR``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Dict


def _data(args: argparse.Namespace, split: str):
    from semvis.data.crossmodal import CaptionedImages, read_karpathy_json

    if args.karpathy_json:
        if not args.image_root:
            raise ValueError("--karpathy-json needs --image-root")
        return read_karpathy_json(args.karpathy_json, args.image_root, split=split)
    from semvis.data.synthetic_scenes import SyntheticScenes

    n_train, n_test = args.synthetic, args.synthetic_test
    ds = SyntheticScenes(n_train + n_test, image_size=args.image_size, seed=args.seed)
    idx = range(n_train) if split == "train" else range(n_train, n_train + n_test)
    return CaptionedImages.from_synthetic(ds, idx)


def _add_data_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--synthetic", type=int, default=400, metavar="N", help="synthetic training images (default 400)")
    sp.add_argument("--synthetic-test", type=int, default=100, metavar="N", help="synthetic test images (default 100)")
    sp.add_argument("--image-size", type=int, default=64, help="synthetic image side in pixels (default 64)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--karpathy-json", help="dataset_coco.json / dataset_flickr30k.json instead of synthetic data")
    sp.add_argument("--image-root", help="image folder of --karpathy-json")
    sp.add_argument("--test-size", type=int, default=None,
                    help="evaluation resize (default: native size for synthetic data, 400 otherwise)")
    sp.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")


def _threads(args):
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _test_size(args):
    if args.test_size:
        return args.test_size
    return None if not args.karpathy_json else 400


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from semvis.models import BEAN
    from semvis.train.crossmodal import CrossModalConfig, CrossModalTrainer, build_vocabulary, evaluate_crossmodal

    _threads(args)
    torch.manual_seed(args.seed)
    try:
        train = _data(args, "train")
        over = {}
        for kv in args.set or []:
            k, sep, v = kv.partition("=")
            if not sep:
                raise ValueError(f"--set expects KEY=VALUE, got {kv!r}")
            try:
                over[k] = json.loads(v)
            except json.JSONDecodeError:
                over[k] = v
        model_over = json.loads(args.model) if args.model else {}
        synthetic = not args.karpathy_json
        base = dict(epochs=args.epochs, batch_size=args.batch_size, out_dir=args.out, seed=args.seed)
        if synthetic:  # the 2-core recipe of RESULTS.md
            base.update(crop_size=args.image_size, crop_scale=(0.8, 1.0), test_size=None, lr=2e-3, lr_decay_epochs=0,
                        warmup_epochs=args.epochs)
        base.update(over)
        cfg = CrossModalConfig(**base)
        vocab = build_vocabulary([c for cs in train.captions for c in cs])
        if synthetic and not model_over:
            model_over = dict(stages=2, dim=128, feature_dim=256)
        model = BEAN.from_preset(args.preset, len(vocab), **model_over)
        trainer = (CrossModalTrainer.resume(args.resume, train, **base) if args.resume
                   else CrossModalTrainer(model, vocab, train, cfg))
    except (ValueError, FileNotFoundError, TypeError) as e:
        print(f"semvis train-crossmodal: {e}", file=sys.stderr)
        return 2
    trainer.fit(log=lambda rec: print(json.dumps(rec)))
    if args.out:
        trainer.save(os.path.join(args.out, "last.pt"))
    if not args.no_eval:
        res = evaluate_crossmodal(model, vocab, _data(args, "test"), size=_test_size(args))
        print(json.dumps(res))
    return 0


def _load(args):
    from semvis.train.crossmodal import load_crossmodal_checkpoint

    return load_crossmodal_checkpoint(args.checkpoint)


def _cmd_eval(args: argparse.Namespace) -> int:
    from semvis.train.crossmodal import evaluate_crossmodal

    _threads(args)
    try:
        model, vocab, _ = _load(args)
        data = _data(args, args.split)
    except (ValueError, FileNotFoundError) as e:
        print(f"semvis eval-crossmodal: {e}", file=sys.stderr)
        return 2
    res = evaluate_crossmodal(model, vocab, data, size=_test_size(args), folds=args.folds, heatmap_k=args.k)
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from semvis.models.localization import heatmap_points, text_heatmap
    from semvis.search import CrossModalIndex
    from semvis.train.crossmodal import default_heatmap_k, encode_captions, encode_images

    _threads(args)
    try:
        model, vocab, _ = _load(args)
        data = _data(args, args.split)
        caps, owner = data.flat_captions()
        img, G = encode_images(model, data, _test_size(args), maps=True)
        index = CrossModalIndex(img, encode_captions(model, vocab, caps))
        out = {}
        if args.text:
            q = encode_captions(model, vocab, args.text)
            D, I = index.text_to_image(q, args.top, rerank=args.rerank)
            out["text_to_image"] = [{"query": t, "images": [data.ids[int(i)] for i in I[n] if i >= 0],
                                     "scores": [round(float(s), 4) for s in D[n]]} for n, t in enumerate(args.text)]
            if args.heatmap_dir:
                from semvis.viz import heatmap_overlay, write_png

                os.makedirs(args.heatmap_dir, exist_ok=True)
                A = model.image.fc.weight.detach().float()
                k = args.k or default_heatmap_k(A.shape[0])
                for n, t in enumerate(args.text):
                    i = int(I[n, 0])
                    im = data.image(i)
                    H = text_heatmap(G[i], A, q[n], k)[0]
                    # the map covers the whole image whatever the test resize: points in its pixels
                    pt = heatmap_points(H, (im.shape[1], im.shape[0]))
                    path = os.path.join(args.heatmap_dir, f"query{n}_image{data.ids[i]}.png")
                    write_png(path, heatmap_overlay(im, H.numpy(), point=pt.tolist()))
                    out["text_to_image"][n]["heatmap"] = path
        if args.image is not None:
            qi = img[[int(i) for i in args.image]]
            D, I = index.image_to_text(qi, args.top, rerank=args.rerank)
            out["image_to_text"] = [{"image": data.ids[int(i)], "captions": [caps[int(j)] for j in I[n] if j >= 0],
                                     "scores": [round(float(s), 4) for s in D[n]]} for n, i in enumerate(args.image)]
    except (ValueError, FileNotFoundError, IndexError) as e:
        print(f"semvis search-crossmodal: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=1))
    return 0


COMMANDS: Dict[str, Callable[[argparse.Namespace], int]] = {
    "train-crossmodal": _cmd_train,
    "eval-crossmodal": _cmd_eval,
    "search-crossmodal": _cmd_search,
}


def register(sub) -> None:
    """Adds the cross-modal subcommands to ``semvis``'s subparsers."""
    sp = sub.add_parser("train-crossmodal", help="train BEAN / DSVE-loc (image-caption embedding with localization)")
    _add_data_args(sp)
    sp.add_argument("--preset", default="tiny", choices=("tiny", "dsve_paper", "dsve_code"))
    sp.add_argument("--model", help="JSON overrides of the model preset, e.g. '{\"dim\": 256}'")
    sp.add_argument("--epochs", type=int, default=15)
    sp.add_argument("--batch-size", type=int, default=32, help="160 in the paper; 32 for the synthetic demo")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a CrossModalConfig field")
    sp.add_argument("--out", help="checkpoint folder (last.pt)")
    sp.add_argument("--resume", metavar="CHECKPOINT")
    sp.add_argument("--no-eval", action="store_true", help="skip the test-set evaluation")
    for name, hlp in (("eval-crossmodal", "R@K / MedR both ways (re-ranking on and off) and the pointing game"),
                      ("search-crossmodal", "text → images and image → texts with an optional re-ranking")):
        sp = sub.add_parser(name, help=hlp)
        sp.add_argument("--checkpoint", required=True)
        _add_data_args(sp)
        sp.add_argument("--split", default="test", choices=("train", "val", "test"))
        sp.add_argument("--k", type=int, default=None, help="heatmap dimensions (default: 180/2400 of d)")
        if name == "eval-crossmodal":
            sp.add_argument("--folds", type=int, default=1, help="5 for the COCO 5-fold 1k protocol")
            sp.add_argument("--json", help="also write the metrics here")
        else:
            sp.add_argument("--text", action="append", help="a caption query (repeatable)")
            sp.add_argument("--image", type=int, action="append", help="an image query: index in the split")
            sp.add_argument("--top", type=int, default=5)
            sp.add_argument("--rerank", action="store_true", help="S_IR / S_CR re-ranking")
            sp.add_argument("--heatmap-dir", help="write heatmap overlays of the top image of each text query")
