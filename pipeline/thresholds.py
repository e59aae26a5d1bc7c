"""The decision thresholds: per genre, shrunk toward one global threshold by a strength chosen by CV.

Per genre, the grid threshold with the best F1 on the tuning rows, pulled toward the best single
(micro-F1) threshold of those rows by `shrink` pseudo-positives; shrink = inf is the global threshold
alone. The strength is a choice like any other, so it is made on out-of-fold rows and, wherever a score
is reported out of fold, inside each fold (nested): `fit` chooses it by CV over the folds of the rows it
is given, then tunes on all of them. A strength that tunes per genre is eligible only when its
out-of-fold micro F1 is at least the global threshold's (issue 14 item 3 asks the same of test); among
the eligible, the best mean of micro and macro F1 wins, ties to the stronger pull.
"""

import numpy as np

from . import rules

GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def decide(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return rules.decide(probs, thresholds)


def parse_shrinks(text: str) -> list[float]:
    """config's "0,10,inf" → [0.0, 10.0, inf], ascending. inf (the global threshold, the yardstick of
    every other strength) must be among them; negatives and NaN are refused."""
    shrinks = sorted(float(s) for s in text.split(",") if s.strip())
    if any(not s >= 0 for s in shrinks) or np.inf not in shrinks:
        raise ValueError(f"threshold_shrinks: non-negative numbers, inf among them; got {text!r}")
    return shrinks


def as_json(shrink: float):
    """A strength as JSON can hold it (JSON has no infinity): "inf" or the number."""
    return "inf" if np.isinf(shrink) else float(shrink)


def f1_curves(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted and actual positives per (grid threshold, genre)."""
    pred = probs[None] >= GRID[:, None, None]
    return (pred & (y[None] > 0)).sum(1), pred.sum(1), np.broadcast_to(y.sum(0), pred.shape[::2])


def global_threshold(probs: np.ndarray, y: np.ndarray) -> float:
    """The single grid threshold with the best micro F1 on these rows."""
    tp, pp, ap = f1_curves(probs, y)
    return float(GRID[(2 * tp.sum(1) / np.maximum(pp.sum(1) + ap.sum(1), 1)).argmax()])


def tune(probs: np.ndarray, y: np.ndarray, shrink: float) -> np.ndarray:
    """Per genre, the grid threshold with the best F1 on these rows, shrunk toward the best global
    threshold: t = (n t_genre + shrink t_global) / (n + shrink), n = the genre's positives here."""
    t_global = global_threshold(probs, y)
    if np.isinf(shrink):
        return np.full(y.shape[1], t_global)
    tp, pp, ap = f1_curves(probs, y)
    t_genre = GRID[(2 * tp / np.maximum(pp + ap, 1)).argmax(0)]
    n = y.sum(0)
    return (n * t_genre + shrink * t_global) / (n + shrink)


def f1_pair(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(micro F1, macro F1) over the genres."""
    tp, pp, ap = (pred & (y > 0)).sum(0), pred.sum(0), y.sum(0)
    micro = 2 * tp.sum() / max(pp.sum() + ap.sum(), 1)
    macro = np.mean(2 * tp / np.maximum(pp + ap, 1))
    return float(micro), float(macro)


def fold_ids(fold: np.ndarray) -> np.ndarray:
    return np.unique(fold[fold >= 0])


def cv_f1(probs, y, fold, tuner) -> tuple[float, float]:
    """Mean over the folds (fold >= 0) of (micro, macro) F1, each fold decided by `tuner(probs, y)` fitted
    on the other folds."""
    scores = []
    for k in fold_ids(fold):
        fit, held = (fold >= 0) & (fold != k), fold == k
        scores.append(f1_pair(y[held], decide(probs[held], tuner(probs[fit], y[fit]))))
    return tuple(float(v) for v in np.mean(scores, axis=0))


def choose_shrink(probs, y, fold, shrinks: list[float]) -> float:
    """The strength this module's docstring describes, by CV over the folds of these rows."""
    cv = {s: cv_f1(probs, y, fold, lambda p, t, s=s: tune(p, t, s)) for s in shrinks}
    eligible = [s for s in shrinks if cv[s][0] >= cv[np.inf][0]]
    return max(reversed(eligible), key=lambda s: sum(cv[s]) / 2)


def fit(probs, y, fold, shrinks: list[float]) -> tuple[np.ndarray, float]:
    """(thresholds, shrink) from the rows with fold >= 0: the strength chosen by CV over their folds
    (one fold alone: the global threshold), then tuned on all of them."""
    rows = fold >= 0
    p, t, f = probs[rows], y[rows], fold[rows]
    shrink = choose_shrink(p, t, f, shrinks) if len(fold_ids(f)) > 1 else np.inf
    return tune(p, t, shrink), shrink


def oof_decisions(probs, y, fold, shrinks: list[float]) -> tuple[np.ndarray, dict]:
    """Decisions on every dev row by thresholds fitted (strength chosen and tuned) on the other folds
    only (False elsewhere), and the strength each fold got."""
    pred, chosen = np.zeros(probs.shape, bool), {}
    for k in fold_ids(fold):
        others = np.where((fold >= 0) & (fold != k), fold, -1)
        thresholds, chosen[str(k)] = fit(probs, y, others, shrinks)
        pred[fold == k] = decide(probs[fold == k], thresholds)
    return pred, chosen
