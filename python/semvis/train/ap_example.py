"""Fine-tune a small image embedding with the listwise AP loss on synthetic data; mAP goes up.

    python -m semvis.train.ap_example --steps 100

Data: each class is a small random colour pattern (an "object") pasted at a random place on a
noisy background, with a class-independent distractor pattern elsewhere, so that the class is
visible only locally and a global descriptor has to find it. The network is a small conv net with
global max pooling (MAC) and an l2-normalized projection: the R-MAC embedding of the issue is not
in this branch yet (issue 4); swap in ``semvis.models`` R-MAC when it lands, the loop is the same.
Each step draws a batch of ``classes x per_class`` images and minimizes ``APLoss`` over the
batch's score matrix (every image ranks the other ones). mAP is the exact mean AP on a held-out
set, every image querying all the others.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import List, Tuple

import torch
from torch import Tensor, nn

from semvis.losses import APLoss
from semvis.train.listwise import multistage_backward


@dataclass
class SyntheticPatterns:
    """Generator of the synthetic retrieval set (deterministic for a seed)."""

    num_classes: int = 12
    size: int = 20
    pattern: int = 5
    noise: float = 0.8
    seed: int = 0
    prototypes: Tensor = field(init=False)
    distractors: Tensor = field(init=False)

    def __post_init__(self):
        g = torch.Generator().manual_seed(self.seed)
        self.prototypes = torch.randn(self.num_classes, 3, self.pattern, self.pattern, generator=g)
        self.distractors = torch.randn(16, 3, self.pattern, self.pattern, generator=g)

    def sample(self, classes: Tensor, g: torch.Generator) -> Tensor:
        """Images [len(classes), 3, size, size] showing the given classes."""
        n, s, p = classes.shape[0], self.size, self.pattern
        x = torch.randn(n, 3, s, s, generator=g) * self.noise
        pos = torch.randint(0, s - p + 1, (n, 4), generator=g)
        gain = 0.6 + 0.4 * torch.rand(n, generator=g)
        dis = torch.randint(0, self.distractors.shape[0], (n,), generator=g)
        for k in range(n):
            y0, x0, y1, x1 = (int(v) for v in pos[k])
            x[k, :, y1:y1 + p, x1:x1 + p] += self.distractors[dis[k]]
            x[k, :, y0:y0 + p, x0:x0 + p] += gain[k] * self.prototypes[classes[k]]
        return x

    def dataset(self, per_class: int, seed: int) -> Tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(self.num_classes).repeat_interleave(per_class)
        return self.sample(labels, g), labels


class SmallMACNet(nn.Module):
    """conv-relu x3, global max pooling (MAC), linear projection, l2: x[B, 3, H, W] -> [B, dim]."""

    def __init__(self, dim: int = 32, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        )
        self.proj = nn.Linear(2 * width, dim)

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x).amax(dim=(2, 3))
        return nn.functional.normalize(self.proj(f), dim=1)


def mean_average_precision(emb: Tensor, labels: Tensor) -> float:
    """Exact mAP, every item querying all the others (same label = relevant)."""
    s = emb @ emb.t()
    n = s.shape[0]
    s.fill_diagonal_(-float("inf"))
    order = s.argsort(dim=1, descending=True)[:, : n - 1]
    rel = (labels[order] == labels.view(-1, 1)).double()
    hits = rel.cumsum(1)
    ranks = torch.arange(1, n, dtype=torch.float64)
    ap = (rel * hits / ranks).sum(1) / rel.sum(1).clamp(min=1)
    return float(ap[rel.sum(1) > 0].mean())


def train(steps: int = 100, per_class: int = 5, bins: int = 20, lr: float = 3e-3, seed: int = 0,
          eval_every: int = 20, chunk_size: int = 0, log=print) -> List[Tuple[int, float, float]]:
    """Runs the example; returns [(step, loss, test mAP)] at step 0 and every ``eval_every`` steps.

    ``chunk_size > 0`` trains with the multi-stage backward of :mod:`semvis.train.listwise`
    (the batch is embedded ``chunk_size`` images at a time), which gives the same gradients.
    """
    torch.manual_seed(seed)
    data = SyntheticPatterns(seed=seed)
    test_x, test_y = data.dataset(per_class=10, seed=seed + 1000)
    net = SmallMACNet()
    loss_fn = APLoss(bins=bins)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    batch_labels = torch.arange(data.num_classes).repeat_interleave(per_class)
    history = []

    def evaluate(step, loss):
        net.eval()
        with torch.no_grad():
            m = mean_average_precision(net(test_x), test_y)
        net.train()
        history.append((step, loss, m))
        log(f"step {step:4d}  loss {loss:.4f}  test mAP {m:.4f}")

    evaluate(0, float("nan"))
    for step in range(1, steps + 1):
        x = data.sample(batch_labels, g)
        opt.zero_grad()
        if chunk_size > 0:
            loss = multistage_backward(net, x, lambda e: loss_fn(e, batch_labels), chunk_size)
        else:
            loss = loss_fn(net(x), batch_labels)
            loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            evaluate(step, loss.item())
    return history


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--bins", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-size", type=int, default=0, help="multi-stage backward, images per chunk (0: off)")
    args = ap.parse_args(argv)
    t0 = time.time()
    hist = train(args.steps, args.per_class, args.bins, args.lr, args.seed, chunk_size=args.chunk_size)
    print(f"mAP {hist[0][2]:.4f} -> {hist[-1][2]:.4f} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
