"""Evaluation of image-to-video search with known ground truth (synthetic corpus).

A query is a hit at the shot level when the top result's frame lies inside the query's true shot
(of the right video): this does not depend on how the index segmented the video. It is a hit at
the frame level when that frame is within ``tolerance`` frames of the true frame (0: exact).
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["shot_ranges", "evaluate"]


def shot_ranges(corpus) -> Dict[Tuple[str, int], Tuple[int, int]]:
    """{(video_id, shot): (first frame, last frame)} of a synthetic corpus."""
    out = {}
    for v in corpus.videos:
        cuts = list(v.cuts) + [len(v.frames)]
        for s in range(len(v.cuts)):
            out[(v.video_id, s)] = (cuts[s], cuts[s + 1] - 1)
    return out


def evaluate(index, queries: Sequence, ranges: Dict[Tuple[str, int], Tuple[int, int]],
             backtracks: Optional[int] = None, exact: bool = False, tolerance: int = 2,
             query_features: Optional[List[Tuple[np.ndarray, np.ndarray]]] = None) -> Dict[str, float]:
    """R@1 of the shot, of the frame within ``tolerance`` and of the exact frame, and latency.

    ``query_features`` (precomputed ORB features of the queries) makes the latency that of the
    search alone; otherwise it includes the query's feature extraction.
    """
    shot_hits = frame_hits = exact_hits = 0
    times = []
    for qi, q in enumerate(queries):
        t0 = time.perf_counter()
        if query_features is not None:
            hits = index.search(None, top=1, backtracks=backtracks, exact=exact, features=query_features[qi])
        else:
            hits = index.search(q.image, top=1, backtracks=backtracks, exact=exact)
        times.append(time.perf_counter() - t0)
        if not hits:
            continue
        h = hits[0]
        a, b = ranges[(q.video_id, q.shot)]
        if h.video == q.video_id and a <= h.frame <= b:
            shot_hits += 1
            if abs(h.frame - q.frame) <= tolerance:
                frame_hits += 1
            if h.frame == q.frame:
                exact_hits += 1
    n = max(len(queries), 1)
    t = np.asarray(times) if times else np.zeros(1)
    return {"shot_r1": shot_hits / n, "frame_r1": frame_hits / n, "exact_frame_r1": exact_hits / n,
            "latency_ms_mean": 1000 * float(t.mean()), "latency_ms_p50": 1000 * float(np.median(t)),
            "latency_ms_p95": 1000 * float(np.percentile(t, 95)), "queries": len(queries)}
