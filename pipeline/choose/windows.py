"""How long texts are read and learned from, chosen by cross-validation on dev folds (stage `train`).

Every score here is out of fold: a dev movie's texts (overview, storyline, overview + storyline, a long
plot matched to it) are scored by the head that did not learn its fold. Decisions use one threshold for
every genre, the best-micro-F1 one on the dev overviews' out-of-fold probabilities (thresholds.py), so
a candidate is judged by how it reads, not by thresholds tuned to it. In order:
1. the training variant (what the heads learn from besides the overviews), read with the first stride and
   mean-pooled embeddings: among the variants whose overview scores (micro and macro F1, both input modes)
   stay within OVERVIEW_BOUND of the overviews-only heads', the best mean F1 on the dev movies' other texts;
2. the stride and the pooling, with that variant's heads, on the dev texts that take more than one window
   (the only texts they change): among the readings within READING_TIE of the best mean F1 there, the one
   that reads the fewest windows (each costs the demo a window run), then the best;
3. the weight of the bag of words (stage `bag`) in each head's probabilities, per input mode, read that way:
   among the weights that keep the overview scores, the best on the dev movies' other texts.
"""

import numpy as np

from pipeline.choose import thresholds
from pipeline.runtime import rules

MODES = ("plot", "plot+poster")
OVERVIEW_BOUND = 0.003  # issue 28: short overviews must not pay for long texts (0.3 F1 points)
# a reading of more windows must be better by more than this to be chosen: the same 0.3 points. Written after
# the first run's evidence: stride 190 came out 0.012 points over 254 on the criterion and read a 700-word plot in
# 5 windows instead of 4, 1.8 s against 1.4 s in the demo (bench.browser, 2026-12-06), where issue 28 asks 1.0 s
READING_TIE = 0.003


def f1(y, probs, cut: float) -> tuple[float, float]:
    return thresholds.f1_pair(y, rules.decide(probs, np.full(y.shape[1], cut)))


def mean_f1(pair: tuple[float, float]) -> float:
    return (pair[0] + pair[1]) / 2


def pooled(per_window: np.ndarray, counts: np.ndarray, how: str) -> np.ndarray:
    """[texts, G] from [windows, G] probabilities (texts' windows in order, `counts` each)."""
    parts = np.split(per_window, np.cumsum(counts)[:-1])
    return np.stack([rules.pool(p, how) for p in parts])


def cuts(overview: dict, y: np.ndarray, dev: np.ndarray) -> dict:
    """Per mode (of `overview`), the one threshold for every genre with the best micro F1 on the dev overviews (out of fold)."""
    return {m: thresholds.global_threshold(overview[m][dev], y[dev]) for m in overview}


def scores(probs: dict, y: np.ndarray, rows: np.ndarray, cut: dict) -> dict:
    """{mode: {"micro": .., "macro": ..}} on `rows`."""
    return {m: dict(zip(("micro", "macro"), f1(y[rows], probs[m][rows], cut[m]))) for m in probs}


def overall(score: dict) -> float:
    """The criterion: mean over input modes of the mean of micro and macro F1."""
    return float(np.mean([mean_f1((s["micro"], s["macro"])) for s in score.values()]))


def keeps_overviews(score: dict, base: dict, bound: float = OVERVIEW_BOUND) -> bool:
    return all(score[m][a] >= base[m][a] - bound for m in score for a in ("micro", "macro"))


def choose_variant(evidence: dict, base: str) -> str:
    """evidence: {variant: {"overviews": scores, "texts": scores}}; the first variant wins ties."""
    eligible = [v for v, e in evidence.items() if keeps_overviews(e["overviews"], evidence[base]["overviews"])]
    return max(eligible, key=lambda v: overall(evidence[v]["texts"]))


def choose_blend(evidence: dict) -> float:
    """evidence: {weight: {"overviews": {mode: scores}, "texts": {mode: scores}}} for one head in one input mode
    (weight 0: no blend). Among the weights whose overview scores stay within OVERVIEW_BOUND of no blend, the
    best criterion on the dev movies' other texts; the smaller weight wins ties."""
    eligible = [a for a, e in evidence.items() if keeps_overviews(e["overviews"], evidence[0.0]["overviews"])]
    return max(sorted(eligible), key=lambda a: overall(evidence[a]["texts"]))


def choose_reading(evidence: dict, windows_read: dict, tie: float = READING_TIE) -> tuple[int, str]:
    """evidence: {(stride, pool): scores on the multi-window dev texts}; windows_read: {stride: the windows
    those texts take}. Within `tie` of the best criterion, the fewest windows, then the best criterion; the
    first candidate wins exact ties."""
    best = max(overall(v) for v in evidence.values())
    near = [c for c in evidence if overall(evidence[c]) >= best - tie]
    return min(near, key=lambda c: (windows_read[c[0]], -overall(evidence[c])))
