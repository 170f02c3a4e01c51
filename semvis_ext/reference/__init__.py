"""Pure torch / numpy references: the oracle of the tests and the baseline of the benchmarks.

Written for clarity, straight from the definitions, with no concern for speed or memory. One module per
op, named as the op is in every other layer (csrc/<op>, semvis_ext/ops/<op>.py, tests/test_<op>.py);
every reference is also importable from this package (``from semvis_ext.reference import region_pool``).
Where a reference function has its module's name (``quantized_ap``, ``region_pool``), the package
attribute is the function; the module is ``sys.modules["semvis_ext.reference.<op>"]`` or
``from semvis_ext.reference.<op> import ...``.
"""
from __future__ import annotations

from .weldon import weldon_pool, weldon_pool_backward, weldon_pool_topk
from .hamming import hamming_distances, hamming_topk
from .kdtree import kdtree_build, kdtree_search
from .quantized_ap import (
    quantized_ap,
    ap_loss,
    quantized_ap_dirtorch,
    fast_ap_loss_kunhe,
    average_precision,
)
from .mining import topk_similar, topk_similar_dense, hard_triplets
from .triplet_losses import vse_contrastive_loss, vse_khardest_loss, triplet_margin_loss
from .region_pool import rmac_regions_cirtorch, region_pool, rmac_cirtorch
from .video import hamming_matrix_np, video_track, video_split_shots, video_majority_keys
from .region_attention import region_attention
from .soft_rank import soft_rank, exact_rank
from .landmarks import landmarks_positions, landmarks_ap
from .mih import mih_search

__all__ = [
    "region_attention",
    "soft_rank",
    "exact_rank",
    "weldon_pool",
    "weldon_pool_topk",
    "weldon_pool_backward",
    "hamming_distances",
    "hamming_topk",
    "kdtree_build",
    "kdtree_search",
    "quantized_ap",
    "ap_loss",
    "quantized_ap_dirtorch",
    "fast_ap_loss_kunhe",
    "average_precision",
    "topk_similar",
    "topk_similar_dense",
    "hard_triplets",
    "vse_contrastive_loss",
    "vse_khardest_loss",
    "triplet_margin_loss",
    "rmac_regions_cirtorch",
    "region_pool",
    "rmac_cirtorch",
    "hamming_matrix_np",
    "video_track",
    "video_split_shots",
    "video_majority_keys",
    "landmarks_positions",
    "landmarks_ap",
    "mih_search",
]
