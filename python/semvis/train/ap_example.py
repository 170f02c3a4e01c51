"""The listwise (AP loss) example, kept for old commands; ``semvis listwise train`` is the command:

    python -m semvis.train.ap_example --steps 100      # = semvis listwise train --set steps=100

The example now lives in :mod:`semvis.train.listwise` (``ListwiseTrainer``, ``train``), its data in
:mod:`semvis.data.synthetic_patterns`, its network in :mod:`semvis.models.small` and its mAP in
:mod:`semvis.eval.retrieval`; the names below are re-exported for old imports.
"""
from ..data.synthetic_patterns import SyntheticPatterns
from ..eval.retrieval import mean_average_precision
from ..models.small import SmallMACNet
from .listwise import multistage_backward, train

__all__ = ["SyntheticPatterns", "SmallMACNet", "mean_average_precision", "multistage_backward", "train", "main"]


def main(argv=None) -> None:
    import argparse
    import time

    ap = argparse.ArgumentParser(description="the listwise AP-loss example (see `semvis listwise train`)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--bins", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=0, help="multi-stage backward, images per chunk (0: off)")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        hist = train(args.steps, args.per_class, args.bins, args.lr, args.seed, chunk_size=args.chunk_size)
    except ValueError as e:  # a bad value: one line, status 2
        ap.exit(2, f"{ap.prog}: {str(e).splitlines()[0]}\n")
    print(f"mAP {hist[0][2]:.4f} -> {hist[-1][2]:.4f} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
