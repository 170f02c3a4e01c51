"""Multi-stage backward for listwise losses on large batches (Revaud et al., ICCV 2019, Sec. 4).

A listwise loss needs the embeddings of the whole batch at once (the paper uses 4,096 images), but
the activations of 4,096 high-resolution images do not fit in memory. The loss only depends on the
network through the embeddings, so the step is split:

1. embed every image without a graph, chunk by chunk;
2. compute the loss on the (leaf) embeddings and back-propagate to them: dL/d embeddings, [B, D];
3. re-embed each chunk with a graph and back-propagate ``dL/d embedding`` of its images.

The parameter gradients are those of a single full-batch backward as long as the network is
deterministic between the two passes: no dropout, BatchNorm in eval mode (frozen statistics, as the
R-MAC recipe uses), same inputs.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


def multistage_backward(net: nn.Module, images: Tensor, loss_fn: Callable[[Tensor], Tensor],
                        chunk_size: int = 64) -> Tensor:
    """Accumulates ``d loss_fn(net(images)) / d params`` into the parameters' ``.grad``, in chunks.

    Args:
        net (nn.Module): images [b, ...] -> embeddings [b, D]; must be deterministic (see module doc).
        images (Tensor[B, ...]): the batch.
        loss_fn (callable): embeddings [B, D] -> scalar loss (e.g. ``lambda e: APLoss()(e, labels)``).
        chunk_size (int): images embedded per forward pass, >= 1.

    Returns:
        Tensor[]: the loss, detached. Peak activation memory is that of ``chunk_size`` images.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"multistage_backward: chunk_size must be an int >= 1, got {chunk_size!r}")
    if images.shape[0] == 0:
        raise ValueError("multistage_backward: images must hold at least one image")
    chunks = images.split(chunk_size)
    with torch.no_grad():
        emb = torch.cat([net(c) for c in chunks])
    emb.requires_grad_(True)
    loss = loss_fn(emb)
    if loss.dim() != 0:
        raise ValueError(f"multistage_backward: loss_fn must return a scalar, got shape {tuple(loss.shape)}")
    (grad,) = torch.autograd.grad(loss, emb)
    for c, g in zip(chunks, grad.split(chunk_size)):
        net(c).backward(g)
    return loss.detach()
