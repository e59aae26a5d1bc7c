"""The rules Python and the browser share, written once as data.

`export` copies RULES into manifest.json (`manifest["rules"]`); `predict`, `serve` and the demo's
assets/js/rules.js read them from there, and the pipeline's own scoring (evaluate, distil) calls the
functions below with RULES itself. tests/test_rules.py runs this file and the JS one on the same cases.
"""

import re

import numpy as np

# bounds the tokenizer's and the encoder's work on huge inputs: ~3,300 English words, ~4,500 tokens, ~19 windows
# (~3 s in the demo at ~160 ms a window); long_plots' longest Wikipedia plot section is past it, its median far under
MAX_CHARS = 20_000
POOLS = ("mean_embedding", "mean_probability", "max_probability")

RULES = {
    # a genre is predicted when its probability is at or over its threshold (per input mode);
    # a movie with none gets its most likely genre
    "decision": {"predict_when": "probability >= threshold", "if_none": "most_likely"},
    # sentences for the leave-one-sentence-out explanation and the student's augmentation
    "sentence_pattern": r"[^.!?]+[.!?]*\s*",
    # text → windows of token ids: the first max_chars characters are tokenized (special tokens included,
    # no padding); a text of more than max_len ids is cut into windows of max_len (its first and last ids,
    # [CLS] and [SEP], in each) that start every `stride` text tokens, the last one ending with the text, so
    # every token is read. The encoder reads each window; `pool` makes one prediction of them (POOLS).
    # export writes the stride and pooling the pipeline chose by cross-validation (stage `long_text`)
    "windows": {"max_chars": MAX_CHARS, "max_len": 256, "stride": 254, "pool": "mean_embedding"},
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
