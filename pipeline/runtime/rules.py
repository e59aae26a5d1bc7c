"""The rules Python and the browser share, written once as data.

`export` copies RULES into manifest.json (`manifest["rules"]`); `predict`, `serve` and the demo's
assets/js/rules.js read them from there, and the pipeline's own scoring (evaluate) calls the
functions below with RULES itself. tests/test_rules.py runs this file and the JS one on the same cases.
"""

import bisect
import re

import numpy as np

# bounds the tokenizer's and the encoder's work on huge inputs: ~3,300 English words, ~4,500 tokens, ~19 windows
# (~3 s in the demo at the ~160 ms a window issue 28 measured, ~6.5 s at the 344 ms of this Xeon's bench.browser,
# 2026-12-06); long_plots' longest Wikipedia plot section is past it, its median far under
MAX_CHARS = 20_000
POOLS = ("mean_embedding", "mean_probability", "max_probability")

RULES = {
    # a genre is predicted when its probability is at or over its threshold (per input mode);
    # a movie with none gets its most likely genre
    "decision": {"predict_when": "probability >= threshold", "if_none": "most_likely"},
    # sentences for the leave-one-sentence-out explanation
    "sentence_pattern": r"[^.!?]+[.!?]*\s*",
    # text → windows of token ids: the first max_chars characters are tokenized (special tokens included,
    # no padding); a text of more than max_len ids is cut into windows of max_len (its first and last ids,
    # [CLS] and [SEP], in each) that start every `stride` text tokens, the last one ending with the text, so
    # every token is read. The encoder reads each window; `pool` makes one prediction of them (POOLS).
    # export writes the stride and pooling the pipeline chose by cross-validation (stage `long_text`)
    "windows": {"max_chars": MAX_CHARS, "max_len": 256, "stride": 254, "pool": "mean_embedding"},
    # the sentence explanation re-reads, at most, this many token ids (every window a left-out part is in,
    # re-run without it); past it, consecutive sentences are left out together (`passages`). 2,048 ids is
    # 8 full windows: ~2.9 s in the demo at 356 ms a 256-token window (bench.browser, 2026-12-06, Xeon
    # avx512, idle: the 3 s bound), a 50-word plot's 4 sentences ~250
    "explanation": {"max_tokens": 2048},
}


def truncation(max_len: int, stride: int | None = None, pool: str = "mean_embedding") -> dict:
    """RULES["windows"] for an encoder of max_len tokens (stride: max_len - 2, no overlap, unless given)."""
    return {**RULES["windows"], "max_len": max_len, "stride": stride or max_len - 2, "pool": pool}


def decide(probs: np.ndarray, thresholds: np.ndarray, rule: dict = RULES["decision"]) -> np.ndarray:
    """Boolean predictions [N, G] (or [G]) from probabilities and per-genre thresholds."""
    if rule != RULES["decision"]:
        raise ValueError(f"unknown decision rule {rule!r}")
    probs = np.asarray(probs)
    flat = probs.ndim == 1
    p = probs[None] if flat else probs
    pred = p >= thresholds
    pred[np.arange(len(p)), p.argmax(1)] |= ~pred.any(1)
    return pred[0] if flat else pred


def sentences(plot: str, pattern: str = RULES["sentence_pattern"]) -> list[str]:
    return re.findall(pattern, plot)


def window_starts(tokens: int, rule: dict) -> list[int]:
    """Where each window starts among a text's `tokens` text tokens (special tokens not counted)."""
    width = rule["max_len"] - 2
    if tokens <= width:
        return [0]
    return list(range(0, tokens - width, rule["stride"])) + [tokens - width]


def windows(ids: list[int], rule: dict) -> list[list[int]]:
    """Token ids (special tokens included: the first and the last) → the windows the encoder reads."""
    if len(ids) <= rule["max_len"]:
        return [ids]
    first, body, last = ids[:1], ids[1:-1], ids[-1:]
    width = rule["max_len"] - 2
    return [first + body[s : s + width] + last for s in window_starts(len(body), rule)]


def windows_without(ids: list[int], rule: dict, start: int, end: int) -> dict[int, list[int]]:
    """For the sentence explanation: {window index: its ids with text tokens start..end-1 left out}, only for
    the windows those tokens are in; every other window stays as it was (its embedding is reused)."""
    if len(ids) <= rule["max_len"]:
        return {0: ids[: 1 + start] + ids[1 + end :]} if start < end else {}
    first, body, last = ids[:1], ids[1:-1], ids[-1:]
    width = rule["max_len"] - 2
    out = {}
    for k, s in enumerate(window_starts(len(body), rule)):
        a, b = max(start, s), min(end, s + width)
        if a < b:
            out[k] = first + body[s:a] + body[b : s + width] + last
    return out


def rerun_tokens(n_ids: int, rule: dict, start: int, end: int) -> int:
    """The token ids windows_without re-runs for a text of n_ids ids, counted without building them: every
    window holding a text token in start..end-1, each without those tokens."""
    if start >= end:
        return 0
    if n_ids <= rule["max_len"]:
        return n_ids - (end - start)
    width, total = rule["max_len"] - 2, 0
    for s in window_starts(n_ids - 2, rule):
        a, b = max(start, s), min(end, s + width)
        if a < b:
            total += width + 2 - (b - a)
    return total


def passages(ends: list[int], n_ids: int, rule: dict, max_tokens: int) -> list[tuple[int, int]]:
    """The explanation's parts: consecutive sentences [i, j) left out together. `ends`: the text-token
    boundaries of the sentences, n(0) = 0 <= n(1) <= ... <= n(m), sentence i holding n(i)..n(i+1)-1.

    Each sentence alone when leaving each out re-runs at most max_tokens ids (rerun_tokens); otherwise the
    sentences are cut into k runs balanced in tokens (sentence i in run floor(n(i) * k / n(m)); a run no
    sentence starts in is skipped), k the largest from m - 1 down to 2 that re-runs at most max_tokens
    (k = 2 when none does: the demo's time budget then stops the explanation). Fewer than 3 sentences: each
    alone. The parts' re-runs are summed as _cost_terms counts them (what rerun_tokens gives, in O(1) a part),
    and a k is left as soon as its sum passes the budget: a paste of thousands of short sentences tries
    thousands of k."""
    m = len(ends) - 1
    alone = [(i, i + 1) for i in range(m)]
    if m < 3:
        return alone
    pairs, unit, covered = _cost_terms(ends, n_ids, rule)
    over = lambda total: unit * total - covered > max_tokens  # noqa: E731  (total: the parts' pairs)
    if not over(sum(pairs(i, i + 1) for i in range(m))):
        return alone
    last = max(ends[-1], 1)
    for k in range(m - 1, 1, -1):
        starts, total, before = [0], 0, min(ends[0] * k // last, k - 1)
        for i in range(1, m):
            run = min(ends[i] * k // last, k - 1)  # sentence i's run, by its first token
            if run != before:
                total += pairs(starts[-1], i)
                if k > 2 and over(total):  # the sum only grows: this k cannot fit
                    break
                starts.append(i)
                before = run
        else:
            total += pairs(starts[-1], m)
            if k == 2 or not over(total):
                return list(zip(starts, starts[1:] + [m]))
    raise AssertionError("unreachable: k = 2 returns")


def _cost_terms(ends: list[int], n_ids: int, rule: dict):
    """What passages sums, rerun_tokens over parts that cover n(0)..n(m) once, in order, as unit * (the parts'
    pairs) - covered: every (part, window) pair sharing a token re-runs the window (unit = max_len ids), less
    the part's tokens in it, and summed over the parts those add up to the windows' tokens in n(0)..n(m)
    (covered, the same for every plan). One window (n_ids <= max_len): each non-empty part re-runs the text's
    n_ids ids. Returns (pairs(i, j): the windows sentences i..j-1 share a token with, unit, covered)."""
    m = len(ends) - 1
    if n_ids <= rule["max_len"]:
        return (lambda i, j: int(ends[i] < ends[j])), n_ids, ends[m] - ends[0]
    width, starts = rule["max_len"] - 2, window_starts(n_ids - 2, rule)
    # a window starting at s shares a token with [a, b) when a < b and a - width < s < b
    up_to = [bisect.bisect_left(starts, n) for n in ends]
    after = [bisect.bisect_left(starts, n - width + 1) for n in ends]
    covered = sum(max(0, min(ends[m], s + width) - max(ends[0], s)) for s in starts)
    return (lambda i, j: up_to[j] - after[i] if ends[i] < ends[j] else 0), rule["max_len"], covered


def truncate(ids: list[int], rule: dict) -> list[int]:
    """The first window alone: what the encoder and the heads learned from (at most max_len ids)."""
    return windows(ids, rule)[0]


def pool(per_window: np.ndarray, how: str) -> np.ndarray:
    """[windows, ...] → [...]: the mean or the maximum over the windows (what `how` pools is its first word:
    embeddings, pooled before the head, or probabilities, the head run on each window)."""
    if how not in POOLS:
        raise ValueError(f"unknown pooling {how!r}")
    per_window = np.asarray(per_window, np.float32)
    return per_window.max(0) if how.startswith("max") else per_window.mean(0, dtype=np.float32)
