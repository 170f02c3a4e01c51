"""The listwise (AP loss) example, kept as an alias of ``semvis listwise train``:

    python -m semvis.train.ap_example --set steps=100      # = semvis listwise train --set steps=100

The example now lives in :mod:`semvis.train.listwise` (``ListwiseTrainer``, ``train``), its data in
:mod:`semvis.data.synthetic_patterns`, its network in :mod:`semvis.models.small` and its mAP in
:mod:`semvis.eval.retrieval`; the names below are re-exported for old imports.
"""
from ..data.synthetic_patterns import SyntheticPatterns
from ..eval.retrieval import mean_average_precision
from ..models.small import SmallMACNet
from .listwise import multistage_backward, train

__all__ = ["SyntheticPatterns", "SmallMACNet", "mean_average_precision", "multistage_backward", "train", "main"]


def main(argv=None) -> int:
    import sys

    from ..cli import main as cli_main

    return cli_main(["listwise", "train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
