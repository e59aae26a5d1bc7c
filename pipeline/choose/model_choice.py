"""Choosing among models by cross-validation: out-of-fold scores (nested thresholds), the value every
choice maximises."""

import numpy as np

from pipeline.choose import thresholds
from pipeline.choose.thresholds import f1_pair


def cv_scores(probs: np.ndarray, y: np.ndarray, fold: np.ndarray, shrinks: list[float]) -> dict:
    """(micro, macro) mean ± sd over the dev folds, each decided by thresholds fitted on the other folds
    (their strength chosen there too: nested), and the strength each fold got."""
    pred, chosen = thresholds.oof_decisions(probs, y, fold, shrinks)
    micro, macro = np.array([f1_pair(y[fold == k], pred[fold == k]) for k in thresholds.fold_ids(fold)]).T
    return {
        f"cv_{avg}_f1": {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
        for avg, v in (("micro", micro), ("macro", macro))
    } | {"cv_threshold_shrink_by_fold": {k: thresholds.as_json(s) for k, s in chosen.items()}}


def cv_value(row: dict) -> float:
    """What every choice maximises: the mean of cross-validated micro and macro F1."""
    return (row["cv_micro_f1"]["mean"] + row["cv_macro_f1"]["mean"]) / 2
