"""Encoding with a trained BEAN / DSVE-loc model, and rebuilding one from a training checkpoint.

* :func:`encode_images` / :func:`encode_captions`: embeddings (and activation maps) in eval mode,
  in batches;
* :func:`default_heatmap_k`: the paper's share of heatmap dimensions (180 of 2400);
* :func:`load_crossmodal_checkpoint`: (model, vocabulary, checkpoint) from a checkpoint written by
  ``semvis.train.CrossModalTrainer`` (read with ``weights_only=True``);
* :data:`CROSSMODAL_MODELS` / :func:`build_crossmodal_model`: the models a cross-modal config names,
  BEAN's presets and SMILE (:mod:`semvis.models.smile`: "smile" = its tiny preset, "smile_paper");
  :func:`model_from_config` rebuilds either from its ``model.config``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..checkpoint import format_tag, read_checkpoint
from ..data.transforms import prepare_images
from ..text.captions import tokenize_captions
from ..text.vocab import Vocabulary
from .bean import BEAN, PRESETS as BEAN_PRESETS
from .smile import SMILE, SMILE_PRESETS

__all__ = ["encode_images", "encode_captions", "default_heatmap_k", "load_crossmodal_checkpoint",
           "CHECKPOINT_FORMATS", "CROSSMODAL_MODELS", "SMILE_MODELS", "build_crossmodal_model", "model_from_config",
           "is_region_model"]

#: SMILE's names in a cross-modal config -> its preset
SMILE_MODELS = {"smile": "tiny", "smile_paper": "smile_paper"}
#: every model name a cross-modal config accepts: BEAN's presets and SMILE's
CROSSMODAL_MODELS = tuple(sorted(BEAN_PRESETS)) + tuple(SMILE_MODELS)
#: BEAN arguments without a SMILE counterpart, ignored for SMILE (so that a preset's model_args apply
#: to both): the pooled D' (SMILE's 1x1 conv goes straight to d) and the WELDON / dropout knobs
_BEAN_ONLY = ("feature_dim", "kmax", "kmin", "alpha", "image_dropout", "use_tanh", "peephole")


def is_region_model(model) -> bool:
    """True for a region-attention model (SMILE): no activation maps, grounding by regions."""
    return isinstance(model, SMILE)


def build_crossmodal_model(name: str, num_words: int, attention: Optional[str] = None, **overrides):
    """The model a cross-modal config names: a BEAN preset (``BEAN.from_preset``) or SMILE
    ("smile": the tiny preset, "smile_paper"); ``attention`` (SMILE only) selects the ablation
    ("softmax" = SMILE, "mean", "1-att", "no-conv", "no-softmax"). BEAN-only ``overrides``
    (``feature_dim``, WELDON, dropout) are ignored for SMILE."""
    if name in SMILE_MODELS:
        kw = {k: v for k, v in overrides.items() if k not in _BEAN_ONLY}
        if attention is not None:
            kw["attention"] = attention
        return SMILE.from_preset(SMILE_MODELS[name], num_words, **kw)
    if name not in BEAN_PRESETS:
        raise ValueError(f"unknown cross-modal model {name!r}; known: {list(CROSSMODAL_MODELS)}")
    if attention is not None:
        raise ValueError(f"attention={attention!r} applies to SMILE models only, not to {name!r}")
    return BEAN.from_preset(name, num_words, **overrides)


def model_from_config(config: Dict[str, Any]):
    """A BEAN or SMILE from its ``model.config`` (SMILE's holds ``attention``)."""
    return SMILE(**config) if "attention" in config else BEAN(**config)


#: the tags of cross-modal checkpoints that load (current first; "semvis.crossmodal/1" before the
#: common tag scheme, same content with ``state_dict`` for ``model``)
CHECKPOINT_FORMATS = (format_tag("crossmodal", 1), "semvis.crossmodal/1")


@torch.no_grad()
def encode_images(model: BEAN, data, size: Optional[int], batch_size: int = 64, device: str = "cpu",
                  maps: bool = False):
    """Image embeddings Tensor[M, d] of ``data`` (a :class:`~semvis.data.crossmodal.CaptionedImages`)
    and, with ``maps``, the activation maps Tensor[M, D', h, w] (BEAN only: a region model has none);
    eval mode, resized to ``size`` (None: native sizes, which must agree)."""
    if maps and is_region_model(model):
        raise ValueError("a SMILE model has no activation maps (its grounding scores regions: SMILE.point)")
    was = model.training
    model.eval()
    embs, Gs = [], []
    try:
        for i0 in range(0, len(data), batch_size):
            x = prepare_images([data.image(i) for i in range(i0, min(i0 + batch_size, len(data)))], size).to(device)
            if is_region_model(model):
                embs.append(model.image(x).float().cpu())
                continue
            G = model.image.activation_maps(x)
            embs.append(model.image.embed_maps(G).float().cpu())
            if maps:
                Gs.append(G.float().cpu())
    finally:
        model.train(was)
    e = torch.cat(embs)
    return (e, torch.cat(Gs)) if maps else e


@torch.no_grad()
def encode_captions(model: BEAN, vocab: Vocabulary, captions: Sequence[str], batch_size: int = 256,
                    device: str = "cpu") -> Tensor:
    """Caption (or phrase) embeddings Tensor[N, d] in eval mode."""
    was = model.training
    model.eval()
    out = []
    try:
        for c0 in range(0, len(captions), batch_size):
            ids, lengths = tokenize_captions(vocab, captions[c0:c0 + batch_size])
            out.append(model.text(ids.to(device), lengths.to(device)).float().cpu())
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, model.dim)


def default_heatmap_k(d: int) -> int:
    """The paper's k = 180 of d = 2400, scaled to other widths: max(1, round(0.075 d))."""
    return max(1, int(round(d * 180 / 2400)))


def load_crossmodal_checkpoint(path: str) -> Tuple[Any, Vocabulary, Dict[str, Any]]:
    """(model in eval mode, vocabulary, the checkpoint dict) from a trainer checkpoint.

    Raises:
        FileNotFoundError: no such file. ValueError: not a readable cross-modal checkpoint.
    """
    ck = read_checkpoint(path, CHECKPOINT_FORMATS, what="cross-modal")
    try:
        model = model_from_config(ck["model_config"])
        model.load_state_dict(ck["model"] if "model" in ck else ck["state_dict"])
        v = ck["vocab"]
        vocab = Vocabulary(v["terms"], v["counts"], unk=v["unk"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"{path}: a cross-modal checkpoint with missing or inconsistent parts "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    model.eval()
    return model, vocab, ck
