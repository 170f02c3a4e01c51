"""semvis_ext: fused retrieval kernels (C++ / CUDA) for PyTorch and NumPy.

Importing this package is cheap: the compiled module, torch and the op registrations are loaded
on first use of a function. ``semvis_ext.info()`` reports how the extension was built.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY: Dict[str, str] = {
    "weldon_pool": "semvis_ext.ops.weldon",
    "quantized_ap": "semvis_ext.ops.quantized_ap",
    "ap_loss": "semvis_ext.ops.quantized_ap",
    "fast_ap_loss": "semvis_ext.ops.quantized_ap",
    "WeldonResult": "semvis_ext.ops.weldon",
    "hamming_distances": "semvis_ext.ops.hamming",
    "hamming_topk": "semvis_ext.ops.hamming",
    "BinaryKDTree": "semvis_ext.ops.kdtree",
    "MultiIndexHash": "semvis_ext.ops.mih",
    "topk_similar": "semvis_ext.ops.mining",
    "hard_triplets": "semvis_ext.ops.mining",
    "relevance": "semvis_ext.ops.mining",
    "LabelMask": "semvis_ext.ops.mining",
    "vse_hardest_triplet_loss": "semvis_ext.ops.triplet_losses",
    "triplet_margin_loss": "semvis_ext.ops.triplet_losses",
    "rmac_regions": "semvis_ext.ops.region_pool",
    "region_pool": "semvis_ext.ops.region_pool",
    "RegionPoolResult": "semvis_ext.ops.region_pool",
    "track": "semvis_ext.ops.video",
    "Tracks": "semvis_ext.ops.video",
    "split_shots": "semvis_ext.ops.video",
    "majority_keys": "semvis_ext.ops.video",
    "region_attention": "semvis_ext.ops.region_attention",
    "soft_rank": "semvis_ext.ops.soft_rank",
    "nn": "semvis_ext.nn",
    "reference": "semvis_ext.reference",
    "landmarks_positions": "semvis_ext.ops.landmarks",
    "landmarks_ap": "semvis_ext.ops.landmarks",
}

__all__ = ["info", "get_num_threads", "set_num_threads", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'semvis_ext' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if module == f"{__name__}.{name}" else getattr(mod, name)  # a submodule, or a name in one
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def info() -> Dict[str, Any]:
    """How the extension was built and what it sees.

    Returns:
        dict with ``version``, ``cuda_built`` (bool), ``cuda_archs`` (str, e.g. ``"90"``),
        ``cuda_device_count`` (int, 0 without a driver or device) and ``num_threads`` (CPU kernels).
    """
    from . import _C

    return {
        "version": __version__,
        "cuda_built": bool(_C.cuda_built()),
        "cuda_archs": _C.cuda_archs(),
        "cuda_device_count": int(_C.cuda_device_count()),
        "num_threads": int(_C.get_num_threads()),
    }


def get_num_threads() -> int:
    """Number of threads used by the CPU kernels."""
    from . import _C

    return int(_C.get_num_threads())


def set_num_threads(n: int) -> None:
    """Sets the threads used by the CPU kernels (``n <= 0``: SEMVIS_NUM_THREADS or all cores)."""
    from . import _C

    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    _C.set_num_threads(n)
