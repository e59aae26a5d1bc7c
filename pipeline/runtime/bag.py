"""The bag of words read beside the encoder: TF-IDF + logistic regression over the whole text, blended into
the heads' probabilities. The encoder reads a long text window by window; the bag reads every word at once.

How a text becomes the bag's genre logits z (the manifest's rules.bag; assets/js/bag.js applies the same):
  its first max_chars characters (the windows' cut), lower-cased; tokens: the maximal runs of 2 or more word
  characters (Unicode letters and numbers, "_": scikit-learn's default pattern); the stop words dropped; terms: the
  tokens and each pair of consecutive ones joined by a space; x[t] = (1 + ln count of t) * idf[t] over the
  vocabulary's terms, x scaled to unit length (none: x = 0); z = x . W + b.
The mode's blend weight a mixes them: p' = sigmoid((1 - a) * logit(p) + a * z), p clipped to [clip, 1 - clip].

Its files (stage `bag` fits them, `export` ships them): bag_of_words.json (its genres, terms, idf, stop words,
each genre's weight scale and bias) and bag_of_words.weights (W as int8, terms x genres, row-major; W = int8 * scale).
"""

import json
import math
import re
from collections import Counter

import numpy as np

# the manifest's rules.bag (export writes it beside rules.RULES). token_pattern: one rule in each engine's syntax
# (Python's \w is exactly [\p{L}\p{N}_]: tests/test_rules.py checks it over every code point)
RULE = {
    "token_pattern": {"python": r"(?u)\b\w\w+\b", "javascript": r"[\p{L}\p{N}_]{2,}"},
    "ngrams": 2,
    "tf": "1 + ln(count)",
    "norm": "l2",
    "blend": "sigmoid((1 - a) * logit(clip(p)) + a * z)",
    "clip": 1e-6,
}


class Bag:
    def __init__(self, spec: dict, weights: bytes, max_chars: int, rule: dict = RULE, labels: list | None = None):
        """`labels`: the manifest's labels, which the bag's genres must be, in order (None: not checked). Every
        check and its message is bag.js's, in the same order."""
        if rule["ngrams"] != 2:
            raise ValueError(f"bag ngrams {rule['ngrams']!r}: this code reads words and pairs of words (2)")
        genres = spec.get("genres")
        if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
            raise ValueError("bag_of_words.json: no list of genre names (a bag written before its genres were named)")
        if labels is not None and genres != list(labels):
            raise ValueError(
                f"bag_of_words.json: its genres ({', '.join(genres)}) are not the manifest's labels ({', '.join(labels)})"
            )
        for key in ("scale", "bias"):
            if len(spec[key]) != len(genres):
                raise ValueError(f"bag_of_words.json: {len(spec[key])} {key} values for {len(genres)} genres")
        if len(spec["idf"]) != len(spec["terms"]):
            raise ValueError(f"bag_of_words.json: {len(spec['idf'])} idf values for {len(spec['terms'])} terms")
        if len(weights) != len(spec["terms"]) * len(genres):
            raise ValueError(
                f"bag_of_words.weights: {len(weights)} bytes for {len(spec['terms'])} terms x {len(genres)} genres"
            )
        self.genres, self.terms = genres, spec["terms"]
        self.index = {t: i for i, t in enumerate(self.terms)}
        self.idf = np.asarray(spec["idf"], np.float64)
        self.stop = frozenset(spec["stop_words"])
        q = np.frombuffer(weights, np.int8).reshape(len(self.terms), len(genres))
        self.w = q.astype(np.float64) * np.asarray(spec["scale"], np.float64)
        self.b = np.asarray(spec["bias"], np.float64)
        self.max_chars, self.pattern = max_chars, re.compile(rule["token_pattern"]["python"])

    def words(self, text: str) -> list[str]:
        """The text's terms, in order: its tokens without stop words, then each pair of consecutive ones."""
        tokens = [t for t in self.pattern.findall(text[: self.max_chars].lower()) if t not in self.stop]
        return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(vocabulary indices, values): the text's unit-length TF-IDF vector, as a sparse row."""
        counts = Counter(self.index[t] for t in self.words(text) if t in self.index)
        idx = np.array(sorted(counts), np.int64)
        v = np.array([(1 + math.log(counts[i])) * self.idf[i] for i in idx], np.float64)
        norm = math.sqrt(float(v @ v)) if len(v) else 0.0
        return idx, (v / norm if norm > 0 else v)

    def logits(self, texts: list[str]) -> np.ndarray:
        """[texts, genres] float64: z = x . W + b."""
        out = np.tile(self.b, (len(texts), 1))
        for row, text in enumerate(texts):
            idx, v = self.features(text)
            out[row] += v @ self.w[idx]
        return out


def blend(probs: np.ndarray, z: np.ndarray, a: float, clip: float = RULE["clip"]) -> np.ndarray:
    """The heads' probabilities [.., G] mixed with the bag's logits z [.., G] at weight a (0: probs unchanged)."""
    if a == 0:
        return probs
    p = np.clip(np.asarray(probs, np.float64), clip, 1 - clip)
    mixed = (1 - a) * np.log(p / (1 - p)) + a * np.asarray(z, np.float64)
    return (1 / (1 + np.exp(-mixed))).astype(np.float32)


def quantized(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 [terms, G], scale [G]): each genre's column at 127 steps of its largest magnitude."""
    scale = (np.maximum(np.abs(w).max(0), 1e-12) / 127).astype(np.float32)  # as stored: the readers' scale
    return np.clip(np.round(w / scale.astype(np.float64)), -127, 127).astype(np.int8), scale


def stored(
    genres: list[str], terms: list[str], idf: np.ndarray, stop_words, w: np.ndarray, b: np.ndarray
) -> tuple[dict, bytes]:
    """(bag_of_words.json's spec, bag_of_words.weights' bytes) from float weights w [terms, G] and bias b [G] of
    `genres`: the numbers as stored, what every reader of the files computes with."""
    q, scale = quantized(w)
    spec = {
        "genres": list(genres),
        "terms": list(terms),
        "idf": [round(float(x), 5) for x in idf],
        "stop_words": sorted(stop_words),
        "scale": [float(s) for s in scale],
        "bias": [float(np.float32(x)) for x in b],
    }
    return spec, q.tobytes()


def write(out, spec: dict, weights: bytes) -> None:
    """bag_of_words.json and .weights in the folder `out` (from `stored`)."""
    (out / "bag_of_words.json").write_text(json.dumps(spec, ensure_ascii=False, separators=(",", ":")))
    (out / "bag_of_words.weights").write_bytes(weights)


def load(folder, max_chars: int) -> Bag:
    spec = json.loads((folder / "bag_of_words.json").read_text())
    return Bag(spec, (folder / "bag_of_words.weights").read_bytes(), max_chars)
