"""The Table-2 comparison of Gordo & Larlus (spec 000.10) on any SemanticData: random, visual
baseline (the untrained network), tf-idf oracle, (V, V), (V+T, V) and (V+T, V+T), with NDCG / PCC
AUCs on the validation queries and the user-agreement score on the test split (simulated users on
synthetic scenes: their scene graphs play the annotators)."""
from __future__ import annotations

import time
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..eval.semantic import choices_from_similarity, inter_user_agreement, method_agreement
from ..eval.user_study import make_study_triplets, simulate_annotators
from ..text.tfidf import surrogate_similarity
from .config import SemanticConfig
from .semantic import SemanticData, SemanticTrainer, build_data, evaluate_scores

__all__ = ["table2", "format_table2"]


def _us(q: torch.Tensor, db: torch.Tensor, trip: np.ndarray, counts: np.ndarray) -> float:
    """Agreement of the similarity q[t0] . db[t1] vs q[t0] . db[t2] with the users."""
    a = (q[trip[:, 0]] * db[trip[:, 1]]).sum(1).numpy()
    b = (q[trip[:, 0]] * db[trip[:, 2]]).sum(1).numpy()
    return method_agreement(counts, choices_from_similarity(a, b))


def table2(cfg: SemanticConfig, data: Optional[SemanticData] = None, n_triplets: int = 1000,
           include: tuple = ("visual", "joint"), log=print) -> Dict[str, Dict[str, float]]:
    """Trains the requested models with ``cfg`` and returns {row: {us, ndcg_auc, pcc_auc, ...}}."""
    data = data if data is not None else build_data(cfg)
    rows: Dict[str, Dict[str, float]] = {}
    val, test = data.val, data.test
    base = SemanticTrainer(cfg.replace(objective="visual"), data)
    qsel = base.query_split("val")
    rel_q = surrogate_similarity(data.t.rows(val[qsel]), data.t.rows(val)).double()
    # user study on the test split, candidates from the baseline's 50 nearest neighbours
    phi0_test = base.embed(test)
    trip = make_study_triplets(phi0_test, n_triplets, neighbours=50, seed=cfg.seed)
    if data.graphs is not None:
        counts, answers = simulate_annotators(trip, [data.graphs[i] for i in test], seed=cfg.seed)
        rows["Human (simulated annotators)"] = {"us": inter_user_agreement(answers)[0]}
    else:
        counts = None
    t_test = torch.from_numpy(data.t.rows(test).to_dense()).double()

    def row(name, ev, us_q=None, us_db=None, extra=None):
        r = {"ndcg_auc": ev["ndcg_auc"], "pcc_auc": ev["pcc_auc"]}
        if counts is not None and us_q is not None:
            r["us"] = _us(us_q, us_db, trip, counts)
        r.update(extra or {})
        rows[name] = r
        log(f"{name:28s} " + "  ".join(f"{k}={v:.1f}" for k, v in r.items()))

    row("Caption tf-idf (oracle)", evaluate_scores(rel_q.clone(), data, val, qsel, cfg.r_max), t_test, t_test)
    rng = np.random.default_rng(cfg.seed)
    rnd = [evaluate_scores(torch.from_numpy(rng.random((len(qsel), len(val)))), data, val, qsel, cfg.r_max)
           for _ in range(5)]
    us_r = [method_agreement(counts, rng.integers(0, 2, len(trip))) for _ in range(5)] if counts is not None else []
    rows["Random (x5)"] = {"ndcg_auc": float(np.mean([r["ndcg_auc"] for r in rnd])),
                           "pcc_auc": float(np.mean([r["pcc_auc"] for r in rnd])),
                           **({"us": float(np.mean(us_r))} if us_r else {})}
    log(f"{'Random (x5)':28s} " + "  ".join(f"{k}={v:.1f}" for k, v in rows["Random (x5)"].items()))
    row("Visual baseline (-, V)", base.evaluate("val"), phi0_test, phi0_test)
    for objective in include:
        tr = SemanticTrainer(cfg.replace(objective=objective), data)
        t0 = time.perf_counter()
        tr.fit()
        secs = time.perf_counter() - t0
        phi = tr.embed(test)
        name = {"visual": "(V, V)", "joint": "(V+T, V)", "wsabie": "WSABIE (V+T, V)"}[objective]
        row(f"Proposed {name}" if objective != "wsabie" else name, tr.evaluate("val"), phi, phi,
            {"train_s": secs, "steps": tr.step})
        if objective == "joint":
            q = tr.joint_query()(phi, tr.text_embed(test).float().cpu())
            log(f"{'':28s} (V+T) query: {tr.joint_query()} calibrated on held-out training images")
            row("Proposed (V+T, V+T)", tr.evaluate("val", query_mode="V+T"), q, phi)
            # the paper's uncalibrated l2(phi + theta), for comparison (issue 23)
            ids, qsel = data.val, tr.query_split("val")
            pv = tr.embed(ids)
            q0 = F.normalize(pv[qsel] + tr.text_embed(ids[qsel]).float().cpu(), dim=1)
            row("(V+T, V+T) as l2(phi + theta)", evaluate_scores(q0 @ pv.T, data, ids, qsel, cfg.r_max),
                F.normalize(phi + tr.text_embed(test).float().cpu(), dim=1), phi)
    return rows


def format_table2(rows: Dict[str, Dict[str, float]]) -> str:
    lines = ["| Method | US | NDCG AUC | PCC AUC |", "|---|---|---|---|"]
    for name, r in rows.items():
        f = lambda k: f"{r[k]:.1f}" if k in r else ""  # noqa: E731
        lines.append(f"| {name} | {f('us')} | {f('ndcg_auc')} | {f('pcc_auc')} |")
    return "\n".join(lines)
