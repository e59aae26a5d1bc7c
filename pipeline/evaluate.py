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

from . import cache, data, embed, finetune, fusion

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, fusion.__file__)

GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
PEERS = ("tfidf_lr", "text_lr", "poster_lr", "concat_lr")  # the simple models ours must beat


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


def logistic(features, y, tr, va, seed: int, grid=(0.01, 0.1, 1.0), scale=True) -> np.ndarray:
    """Probabilities for every row from one-vs-rest logistic regression fitted on `tr` rows,
    its C chosen on `va` rows (micro-F1 at 0.5), so the baselines get a fair tuning too."""
    best, best_f1 = None, -1.0
    for c in grid:
        steps = [StandardScaler()] if scale else []
        lr = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        model = make_pipeline(*steps, OneVsRestClassifier(lr, n_jobs=2)).fit(features[tr], y[tr])
        probs = model.predict_proba(features)
        score = f1(y[va], probs[va] >= 0.5)
        if score > best_f1:
            best, best_f1 = probs, score
    return best


def fusion_probs(head, text, image, has_poster) -> np.ndarray:
    with torch.no_grad():
        return head(*fusion.tensors(text, image, has_poster)).numpy()


def candidates(cfg, movies, y, split, embedded, tuned, trained) -> dict:
    """Every model in the table: id → (name, thunk giving probabilities for every movie)."""
    frozen, text, image = embedded.load()
    head, poster_head, balanced = (fusion.load(trained, name) for name in ("head", "poster_head", "balanced_head"))
    tr, va = split == "train", split == "val"
    has_poster = (movies.poster != "").to_numpy(np.float32)[:, None]
    nothing = np.zeros((len(y), 0), np.float32)

    def tfidf():
        vec = TfidfVectorizer(min_df=2, max_features=50000, ngram_range=(1, 2), sublinear_tf=True, stop_words="english")
        vec.fit(movies.overview[tr])
        return logistic(vec.transform(movies.overview), y, tr, va, cfg.seed, grid=(1.0, 4.0, 16.0), scale=False)

    return {
        "tfidf_lr": ("TF-IDF + logistic regression", tfidf),
        "text_lr": ("Frozen MiniLM plot embedding + LR", lambda: logistic(frozen, y, tr, va, cfg.seed)),
        "poster_lr": ("Frozen Lite0 poster embedding + LR", lambda: logistic(image, y, tr, va, cfg.seed)),
        "concat_lr": (
            "Frozen plot + poster embeddings + LR",
            lambda: logistic(np.hstack([frozen, image]), y, tr, va, cfg.seed),
        ),
        "text_finetuned": ("Fine-tuned MiniLM (plot only)", lambda: np.load(tuned / "probs.npy")),
        "poster_mlp": (
            "Poster MLP head on Lite0 (poster only)",
            lambda: fusion_probs(poster_head, nothing, image, has_poster),
        ),
        "fusion": ("Fusion MLP (plot + poster)", lambda: fusion_probs(head, text, image, has_poster)),
        "fusion_plot_only": (
            "Fusion MLP (plot only)",
            lambda: fusion_probs(head, text, image, np.zeros_like(has_poster)),
        ),
        "fusion_balanced": (
            "Fusion MLP, trained on genre-balanced resampling",
            lambda: fusion_probs(balanced, text, image, has_poster),
        ),
    }


def run(cfg) -> cache.Output:
    curated, tuned, embedded, trained = data.run(cfg), finetune.run(cfg), embed.run(cfg), fusion.run(cfg)
    parts = {
        "train": trained.key,
        "embed": embedded.key,
        "finetune": tuned.key,
        "code": CODE,
        "config": cfg.subset(
            "default_threshold", "seed", "fusion_hidden", "fusion_dropout", "fusion_epochs", "fusion_lr"
        ),
    }

    def build(out: Path):
        movies, labels, y = data.load(curated)
        split = movies.split.to_numpy()
        va, te = split == "val", split == "test"
        models, thresholds, probs = [], {}, {}
        for key, (name, predict) in tqdm(
            candidates(cfg, movies, y, split, embedded, tuned, trained).items(), desc="scoring models"
        ):
            probs[key] = predict()
            thresholds[key] = tune_thresholds(probs[key][va], y[va])
            models.append({"id": key, "name": name, **scores(y[te], decide(probs[key][te], thresholds[key]), labels)})
        fixed = scores(y[te], decide(probs["fusion"][te], np.full(len(labels), cfg.default_threshold)), labels)
        fixed.pop("per_genre")
        np.savez_compressed(out / "probs.npz", **probs)  # for the figures: curves, calibration
        peers = [m for m in models if m["id"] in PEERS]
        by_id = {m["id"]: m for m in models}
        margins = {
            mid: {
                f"{avg}_points": 100 * (by_id[mid][f"{avg}_f1"] - max(p[f"{avg}_f1"] for p in peers))
                for avg in ("micro", "macro")
            }
            for mid in ("fusion", "fusion_plot_only", "text_finetuned")
        }
        metrics = {
            "labels": labels,
            "peers": {
                "ids": list(PEERS),
                "best_micro_f1": max(p["micro_f1"] for p in peers),
                "best_macro_f1": max(p["macro_f1"] for p in peers),
                "margins": margins,
            },
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
