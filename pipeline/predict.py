"""`predict`: genres for plots (and optional posters) from the exported ONNX files.

The same files, tokenizer and preprocessing as the in-browser demo, run with onnxruntime.
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from tokenizers import Tokenizer
from tqdm import tqdm

from . import image
from .text import encode


class GenrePredictor:
    def __init__(self, models: Path, threads: int = 1):
        self.spec = json.loads((models / "manifest.json").read_text())
        self.labels = self.spec["labels"]
        self.thresholds = np.array(self.spec["thresholds"], dtype=np.float32)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1

        def session(part: str) -> ort.InferenceSession:
            return ort.InferenceSession(str(models / self.spec[part]["file"]), opts, providers=["CPUExecutionProvider"])

        self.text, self.poster, self.head = session("text_encoder"), session("poster_encoder"), session("fusion_head")
        self.tokenizer = Tokenizer.from_file(str(models / self.spec["text_encoder"]["tokenizer"]))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_len = self.spec["text_encoder"]["max_len"]

    def embed_plot(self, plot: str) -> np.ndarray:
        ids = np.array([encode(self.tokenizer, plot, self.max_len)], dtype=np.int64)
        return self.text.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]

    def embed_poster(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
        return self.poster.run(None, {"image": x})[0]

    def combine(self, plot_emb: np.ndarray, poster_emb: np.ndarray | None = None) -> np.ndarray:
        """Genre probabilities from a plot embedding and, when there is one, a poster embedding."""
        has = poster_emb is not None
        image = poster_emb if has else np.zeros((1, 1280), np.float32)
        return self.head.run(
            None, {"text": plot_emb, "image": image, "has_poster": np.full((1, 1), float(has), np.float32)}
        )[0][0]

    def probabilities(self, plot: str, pixels: np.ndarray | None = None) -> np.ndarray:
        return self.combine(self.embed_plot(plot), None if pixels is None else self.embed_poster(pixels))

    def decide(self, probs: np.ndarray) -> list[str]:
        chosen = [g for g, p, t in zip(self.labels, probs, self.thresholds) if p >= t]
        return chosen or [self.labels[int(np.argmax(probs))]]


SENTENCE = re.compile(r"[^.!?]+[.!?]*\s*")  # demo.js splits plots with the same pattern


def sentences(plot: str) -> list[str]:
    return SENTENCE.findall(plot)


def sentence_importance(predictor: GenrePredictor, plot: str, pixels: np.ndarray | None = None) -> list[dict]:
    """Leave-one-sentence-out occlusion: how much each genre's probability drops without each sentence."""
    parts = sentences(plot)
    poster = None if pixels is None else predictor.embed_poster(pixels)  # the same for every occlusion
    full = predictor.combine(predictor.embed_plot(plot), poster)
    out = []
    for i, sentence in enumerate(parts):
        rest = "".join(parts[:i] + parts[i + 1 :]).strip()
        if rest and len(parts) > 1:
            without = predictor.combine(predictor.embed_plot(rest), poster)
        else:
            without = np.full_like(full, np.nan)
        out.append({"sentence": sentence, "drop": dict(zip(predictor.labels, (full - without).tolist()))})
    return out


def predict_csv(input_csv: Path, out_csv: Path, models: Path) -> int:
    try:
        df = pd.read_csv(input_csv, keep_default_na=False, dtype=str)
    except Exception as e:
        print(f"error: cannot read {input_csv}: {e}", file=sys.stderr)
        return 2
    if "overview" not in df.columns:
        print(f"error: {input_csv} has no 'overview' column", file=sys.stderr)
        return 2
    predictor = GenrePredictor(models)
    rows = []
    for i, row in tqdm(df.iterrows(), total=len(df), desc="predicting", disable=len(df) < 50):
        pixels = None
        poster = row.get("poster", "").strip()
        if poster:
            try:
                pixels = image.load_image(input_csv.parent / poster)
            except (OSError, ValueError) as e:
                print(f"warning: row {i + 1}: poster {poster!r} unusable ({e}); plot-only prediction", file=sys.stderr)
        try:
            probs = predictor.probabilities(row["overview"], pixels)
            out = dict(zip(predictor.labels, probs.round(6).tolist()))
            out["genres"] = "|".join(predictor.decide(probs))
        except Exception as e:  # one bad row must not end the run
            print(f"warning: row {i + 1}: no prediction ({e})", file=sys.stderr)
            out = {**{g: np.nan for g in predictor.labels}, "genres": ""}
        rows.append(({"tmdb_id": row["tmdb_id"]} if "tmdb_id" in df.columns else {}) | out)
    columns = (["tmdb_id"] if "tmdb_id" in df.columns else []) + predictor.labels + ["genres"]
    pd.DataFrame(rows, columns=columns).to_csv(out_csv, index=False)
    print(f"wrote {len(rows)} predictions to {out_csv}", file=sys.stderr)
    return 0
