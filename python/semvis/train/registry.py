"""cirtorch-style registries for the pluggable parts of the semantic trainer.

Each entry resolves at call time to the compiled implementation when the installed
``semvis_ext`` / ``semvis.losses`` provide it, and to the clearly named pure-torch fallback of
:mod:`semvis.train.fallbacks` otherwise (a warning says which). ``implementations()`` reports
what was picked (it is printed by ``semvis train-semantic`` and stored in checkpoints).
"""
from __future__ import annotations

import importlib
import logging
from typing import Callable, Dict

from . import fallbacks

log = logging.getLogger("semvis.train")
__all__ = ["POOLINGS", "MINERS", "build_pooling", "build_miner", "build_objective", "build_text_projection",
           "implementations"]

_warned = set()


def _ext_has(name: str) -> bool:
    try:
        import semvis_ext
    except ImportError:
        return False
    return name in getattr(semvis_ext, "_LAZY", {})


def _nn_has(cls: str) -> bool:
    if not _ext_has("nn"):
        return False
    try:
        return hasattr(importlib.import_module("semvis_ext.nn"), cls)
    except Exception:  # noqa: BLE001 - a broken extension means "missing"
        return False


def _losses_module():
    try:
        return importlib.import_module("semvis.losses")
    except ImportError:
        return None


def _warn(what: str, fallback: str) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning("%s is not installed: using the pure-torch fallback %s", what, fallback)


def _rmac(dim: int, levels: int, whitening: bool = True):
    if _nn_has("RMAC"):
        import semvis_ext

        return semvis_ext.nn.RMAC(dim, levels=levels, whitening=whitening)
    _warn("semvis_ext.nn.RMAC", "semvis.train.fallbacks.TorchRMACFallback")
    return fallbacks.TorchRMACFallback(dim, levels=levels, whitening=whitening)


POOLINGS: Dict[str, Callable] = {"rmac": _rmac}


def _hard_triplets():
    if _ext_has("hard_triplets"):
        import semvis_ext

        return semvis_ext.hard_triplets
    _warn("semvis_ext.hard_triplets", "semvis.train.fallbacks.torch_hard_triplets_fallback")
    return fallbacks.torch_hard_triplets_fallback


MINERS: Dict[str, Callable] = {"hard_triplets": _hard_triplets}


def build_pooling(name: str, dim: int, levels: int):
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; expected one of {sorted(POOLINGS)}")
    return POOLINGS[name](dim, levels)


def build_miner(name: str = "hard_triplets") -> Callable:
    if name not in MINERS:
        raise ValueError(f"unknown miner {name!r}; expected one of {sorted(MINERS)}")
    return MINERS[name]()


#: training objective -> loss terms (spec 000.7)
OBJECTIVES = {"visual": ("v",), "joint": ("v", "t1", "t2"), "wsabie": ("t1",)}


def build_objective(name: str, margin: float):
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}")
    mod = _losses_module()
    if mod is not None and hasattr(mod, "JointTripletLoss"):
        return mod.JointTripletLoss(margin, terms=OBJECTIVES[name])
    _warn("semvis.losses.JointTripletLoss", "semvis.train.fallbacks.JointTripletLossFallback")
    return fallbacks.JointTripletLossFallback(margin, terms=OBJECTIVES[name])


def build_text_projection(vocab_size: int, dim: int):
    mod = _losses_module()
    if mod is not None and hasattr(mod, "TextProjection"):
        return mod.TextProjection(vocab_size, dim)
    _warn("semvis.losses.TextProjection", "semvis.train.fallbacks.TextProjectionFallback")
    return fallbacks.TextProjectionFallback(vocab_size, dim)


def implementations() -> Dict[str, str]:
    """Which implementation each pluggable part resolves to right now."""
    lm = _losses_module()
    return {
        "pooling.rmac": "semvis_ext.nn.RMAC" if _nn_has("RMAC") else "fallbacks.TorchRMACFallback",
        "miner.hard_triplets": ("semvis_ext.hard_triplets" if _ext_has("hard_triplets")
                                else "fallbacks.torch_hard_triplets_fallback"),
        "loss": ("semvis.losses.JointTripletLoss" if lm is not None and hasattr(lm, "JointTripletLoss")
                 else "fallbacks.JointTripletLossFallback"),
    }
