"""The decision thresholds: per genre, shrunk toward one global threshold by a strength chosen by CV.

Per genre, the grid threshold with the best F1 on the tuning rows, pulled toward the best single
(micro-F1) threshold of those rows by `shrink` pseudo-positives; shrink = inf is the global threshold
alone. The strength is a choice like any other, so it is made on out-of-fold rows and, wherever a score
is reported out of fold, inside each fold (nested): `fit` chooses it by CV over the folds of the rows it
is given, then tunes on all of them. A strength that tunes per genre is eligible only when its
out-of-fold micro F1 is at least the global threshold's (issue 14 item 3 asks the same of test); among
the eligible, the best mean of micro and macro F1 wins, ties to the stronger pull.
"""

import re

import numpy as np

from pipeline.runtime import rules

GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def parse_shrinks(text) -> list[float]:
    """config's "0,10,inf" → [0.0, 10.0, inf], ascending. inf (the global threshold, the yardstick of
    every other strength) must be among them; anything but "inf" and finite non-negative numbers is
    refused."""
    error = ValueError(f"threshold_shrinks: distinct non-negative numbers and inf, comma-separated; got {text!r}")
    if not isinstance(text, str):
        raise error
    tokens = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not all(re.fullmatch(r"inf|\d+(\.\d*)?", t) for t in tokens):
        raise error
    shrinks = [np.inf if t == "inf" else float(t) for t in tokens]
    if np.inf not in shrinks or not np.isfinite([s for s in shrinks if s != np.inf]).all():
        raise error
    if len(set(shrinks)) != len(shrinks):
        raise error
    return sorted(shrinks)


def as_json(shrink: float):
    """A strength as JSON can hold it (JSON has no infinity): "inf" or the number."""
    return "inf" if np.isinf(shrink) else float(shrink)


def genre_f1_curves(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """F1 per (grid threshold, genre), each genre decided by its own probability >= threshold: the shipped
    rule's fallback (a movie with no genre over gets its most likely one) couples the genres, so it is
    left out here; micro_curve keeps it."""
    pred = probs[None] >= GRID[:, None, None]
    tp, pp = (pred & (y[None] > 0)).sum(1), pred.sum(1)
    return 2 * tp / np.maximum(pp + y.sum(0), 1)


def micro_curve(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Micro F1 at each grid threshold used for every genre, decided by the shipped rule."""
    return np.array([f1_pair(y, rules.decide(probs, np.full(y.shape[1], t)))[0] for t in GRID])


def global_threshold(probs: np.ndarray, y: np.ndarray) -> float:
    """The single grid threshold with the best micro F1 on these rows."""
    return float(GRID[micro_curve(probs, y).argmax()])


def tune(probs: np.ndarray, y: np.ndarray, shrink: float) -> np.ndarray:
    """Per genre, the grid threshold with the best F1 on these rows, shrunk toward the best global
    threshold: t = (n t_genre + shrink t_global) / (n + shrink), n = the genre's positives here (a genre
    with none and no pull takes the global threshold)."""
    if len(y) == 0:
        raise ValueError("no rows to tune thresholds on")
    t_global = global_threshold(probs, y)
    if np.isinf(shrink):
        return np.full(y.shape[1], t_global)
    t_genre = GRID[genre_f1_curves(probs, y).argmax(0)]
    n = y.sum(0)
    weight = n + shrink
    return np.where(weight > 0, (n * t_genre + shrink * t_global) / np.maximum(weight, 1e-12), t_global)


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
        scores.append(f1_pair(y[held], rules.decide(probs[held], tuner(probs[fit], y[fit]))))
    return tuple(float(v) for v in np.mean(scores, axis=0))


def strength_cv(probs, y, fold, shrinks: list[float]) -> dict:
    """{strength: (micro, macro)} by CV over the folds of these rows: what choose_shrink decides on."""
    return {s: cv_f1(probs, y, fold, lambda p, t, s=s: tune(p, t, s)) for s in shrinks}


def choose_shrink(probs, y, fold, shrinks: list[float]) -> float:
    """The strength this module's docstring describes, by CV over the folds of these rows."""
    cv = strength_cv(probs, y, fold, shrinks)
    eligible = [s for s in shrinks if cv[s][0] >= cv[np.inf][0]]
    return max(sorted(eligible, reverse=True), key=lambda s: sum(cv[s]) / 2)  # first maximum: the stronger pull


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
        cut, chosen[str(k)] = fit(probs, y, others, shrinks)
        pred[fold == k] = rules.decide(probs[fold == k], cut)
    return pred, chosen
