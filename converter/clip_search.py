"""Clip search: pick the activation-clip percentile by how well the *integer* network classifies the
calibration set.

At small T (2-3) the clip decides accuracy: a high percentile wastes the few codes on rare outliers,
a low one clips too much, and where the optimum lies depends on the network. ``method="search"``
converts the network once per candidate percentile (one percentile for every layer), runs the golden
model on the calibration inputs and keeps the best candidate by

1. agreement of its labels with the reference: the calibration set's own labels when it has them (a
   named dataset's training split), else the float model's predictions (label-free);
2. among equals (a training split is often classified perfectly from T = 3 on), fidelity: the
   smallest relative squared error between its scores, scaled by the best-fitting factor, and the
   float model's logits.

Only calibration data are used, never a test split; the candidates' numbers are recorded in the
network's ``calibration`` block.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SEARCH_PERCENTILES", "search_percentile", "score_error"]

#: Candidate percentiles, from heavy clipping to none (100 = the maximum).
SEARCH_PERCENTILES = (95.0, 97.0, 98.0, 99.0, 99.5, 99.9, 99.99, 100.0)


def score_error(scores: np.ndarray, logits: np.ndarray) -> float:
    """``min_k |k·scores - logits|² / |logits|²``: how far the integer scores are from the float logits,
    up to the scale the quantisation introduced."""
    scores = np.asarray(scores, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    power = float((scores * scores).sum())
    k = float((scores * logits).sum()) / power if power else 0.0
    return float(((k * scores - logits) ** 2).sum() / max(float((logits * logits).sum()), 1e-300))


def search_percentile(build, raw_bytes: np.ndarray, reference: np.ndarray, logits: np.ndarray,
                      percentiles=SEARCH_PERCENTILES):
    """Return ``(best_percentile, table)``.

    Parameters
    ----------
    build : callable
        ``build(percentile) -> Network``: the conversion at one percentile.
    raw_bytes : uint8 array (N, ...)
        Calibration inputs as the hardware sees them.
    reference : int array (N,)
        Labels to agree with (true labels, or the float model's predictions).
    logits : float array (N, classes)
        The float model's outputs on the same inputs.
    """
    table, best = [], None
    for percentile in percentiles:
        result = build(percentile).run(raw_bytes)
        agreement = float(np.mean(result.labels == reference))
        error = score_error(result.scores, logits)
        table.append({"percentile": float(percentile), "agreement": agreement, "score_error": error})
        if best is None or (agreement, -error) > best[0]:
            best = ((agreement, -error), float(percentile))
    return best[1], table
