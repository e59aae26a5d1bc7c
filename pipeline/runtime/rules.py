"""The rules Python and the browser share, written once as data.

`export` copies RULES into manifest.json (`manifest["rules"]`); `predict`, `serve` and the demo's
assets/js/rules.js read them from there, and the pipeline's own scoring (evaluate, distil) calls the
functions below with RULES itself. tests/test_rules.py runs this file and the JS one on the same cases.
"""

import re

import numpy as np

MAX_CHARS = 20_000  # far past max_len tokens; bounds the tokenizer's work on huge inputs

RULES = {
    # a genre is predicted when its probability is at or over its threshold (per input mode);
    # a movie with none gets its most likely genre
    "decision": {"predict_when": "probability >= threshold", "if_none": "most_likely"},
    # sentences for the leave-one-sentence-out explanation and the student's augmentation
    "sentence_pattern": r"[^.!?]+[.!?]*\s*",
    # text → token ids: the first max_chars characters are tokenized (special tokens included, no
    # padding); longer than max_len tokens keeps the first head_tokens and the last tail_tokens ([SEP])
    "truncation": {"max_chars": MAX_CHARS, "max_len": 256, "head_tokens": 255, "tail_tokens": 1},
}


def truncation(max_len: int) -> dict:
    """RULES["truncation"] for an encoder window of max_len tokens."""
    return {**RULES["truncation"], "max_len": max_len, "head_tokens": max_len - 1}


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


def truncate(ids: list[int], rule: dict) -> list[int]:
    """Token ids (special tokens included) cut to the window: the first head_tokens and the last tail_tokens."""
    if len(ids) <= rule["max_len"]:
        return ids
    return ids[: rule["head_tokens"]] + ids[len(ids) - rule["tail_tokens"] :]
