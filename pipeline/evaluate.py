"""Stage `evaluate`: thresholds tuned on validation, every model scored on the same test split.

Baselines (logistic regression on TF-IDF, on the frozen plot embedding, on the poster embedding,
and on both) get the same per-genre threshold tuning as our model, so the table is fair.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from . import cache, data, embed, fusion

GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def decide(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Genres at or over their threshold; a movie with none gets its most likely genre."""
    pred = probs >= thresholds
    top = probs.argmax(1)
    pred[np.arange(len(probs)), top] |= ~pred.any(1)
    return pred


def tune_thresholds(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per genre, the grid threshold with the best F1 on these (validation) rows."""
    best = np.full(y.shape[1], 0.5)
    for g in range(y.shape[1]):
        scores = [f1(y[:, g], probs[:, g] >= t) for t in GRID]
        best[g] = GRID[int(np.argmax(scores))]
    return best


def f1(y, pred) -> float:
    tp = float((y * pred).sum())
    return 2 * tp / max(float(y.sum() + pred.sum()), 1.0)


def scores(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    out = {}
    for avg in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        out.update({f"{avg}_precision": p, f"{avg}_recall": r, f"{avg}_f1": f})
    p, r, f, n = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    out["per_genre"] = {
        g: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i])}
        for i, g in enumerate(labels)
    }
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in out.items()}


def logistic(features: np.ndarray, y: np.ndarray, tr: np.ndarray, seed: int, scale: bool = True):
    """Probabilities for every row from a one-vs-rest logistic regression fitted on `tr` rows."""
    steps = [StandardScaler()] if scale else []
    model = make_pipeline(
        *steps, OneVsRestClassifier(LogisticRegression(C=0.05 if scale else 4.0, max_iter=2000, random_state=seed))
    )
    model.fit(features[tr], y[tr])
    return model.predict_proba(features)


def fusion_probs(head, text, image, has_poster) -> np.ndarray:
    with torch.no_grad():
        return head(*fusion.tensors(text, image, has_poster)).numpy()


def run(cfg) -> cache.Output:
    curated, embedded, trained = data.run(cfg), embed.run(cfg), fusion.run(cfg)
    parts = {
        "train": trained.key,
        "code": cache.source_digest(__file__),
        "config": cfg.subset("default_threshold", "seed"),
    }

    def build(out: Path):
        movies, labels, y = data.load(curated)
        text, image = embed.load(embedded)
        head = fusion.load(trained)
        split = movies.split.to_numpy()
        tr, va, te = (split == s for s in ("train", "val", "test"))
        has_poster = (movies.poster != "").to_numpy(np.float32)[:, None]
        tfidf = TfidfVectorizer(
            min_df=2, max_features=50000, ngram_range=(1, 2), sublinear_tf=True, stop_words="english"
        )
        tfidf.fit(movies.overview[tr])
        candidates = {
            "tfidf_lr": (
                "TF-IDF + logistic regression",
                lambda: logistic(tfidf.transform(movies.overview), y, tr, cfg.seed, scale=False),
            ),
            "text_lr": ("Frozen MiniLM plot embedding + LR", lambda: logistic(text, y, tr, cfg.seed)),
            "poster_lr": ("Frozen Lite0 poster embedding + LR", lambda: logistic(image, y, tr, cfg.seed)),
            "concat_lr": ("Plot + poster embeddings + LR", lambda: logistic(np.hstack([text, image]), y, tr, cfg.seed)),
            "fusion": ("Fusion MLP (plot + poster)", lambda: fusion_probs(head, text, image, has_poster)),
            "fusion_plot_only": (
                "Fusion MLP (plot only)",
                lambda: fusion_probs(head, text, image, np.zeros_like(has_poster)),
            ),
        }
        models, thresholds = [], {}
        for key, (name, predict) in tqdm(candidates.items(), desc="scoring models"):
            probs = predict()
            thresholds[key] = tune_thresholds(probs[va], y[va])
            row = {"id": key, "name": name, **scores(y[te], decide(probs[te], thresholds[key]), labels)}
            models.append(row)
            if key == "fusion":
                fixed = scores(y[te], decide(probs[te], np.full(len(labels), cfg.default_threshold)), labels)
                fixed.pop("per_genre")
        metrics = {
            "labels": labels,
            "split": {s: int((split == s).sum()) for s in ("train", "val", "test")},
            "models": models,
            "best": next(m for m in models if m["id"] == "fusion"),
            "global_threshold": {"threshold": cfg.default_threshold, **fixed},
            "thresholds": dict(zip(labels, thresholds["fusion"].tolist())),
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))

    result = cache.cached(cfg, "evaluate", parts, build)
    site = cfg.path("site_data")
    site.mkdir(parents=True, exist_ok=True)
    shutil.copy(result / "metrics.json", site / "metrics.json")
    shutil.copy(curated / "curation.json", site / "curation.json")
    return result


def load(out: cache.Output) -> dict:
    return json.loads((out / "metrics.json").read_text())
