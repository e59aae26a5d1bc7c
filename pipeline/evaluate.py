"""Stage `evaluate`: every model judged the same way: chosen on dev folds, scored once on test.

Each model has out-of-fold probabilities for every dev row (cross-fitted) and test probabilities
from its version trained on all dev rows. Thresholds per genre and per input mode are tuned on the
out-of-fold rows, shrunk toward one global threshold for rare genres by a strength chosen by
cross-validation; the baselines (logistic regression on TF-IDF, on the frozen plot embedding, on
the poster embedding, on both) get their regularisation chosen by the same folds and their own
thresholds, so the table is fair. Test: micro and macro F1 with bootstrap 95 % intervals; dev:
cross-validated mean ± sd over the folds.
"""

import json
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from . import cache, data, embed, finetune, fusion

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__)

GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
SHRINK = (0, 10, 30, 100)  # pseudo-positives pulling a genre's threshold toward the global one
BOOTSTRAP = 1000
# the simple models ours must beat, by input mode: a plot + poster visitor could use any of them
PEERS = {"plot": ("tfidf_lr", "text_lr"), "plot+poster": ("tfidf_lr", "text_lr", "poster_lr", "concat_lr")}
SHIPPED = {"plot": "fusion_plot_only", "plot+poster": "fusion"}


def decide(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Genres at or over their threshold; a movie with none gets its most likely genre."""
    pred = probs >= thresholds
    top = probs.argmax(1)
    pred[np.arange(len(probs)), top] |= ~pred.any(1)
    return pred


def f1_curves(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted and actual positives per (grid threshold, genre)."""
    pred = probs[None] >= GRID[:, None, None]
    return (pred & (y[None] > 0)).sum(1), pred.sum(1), np.broadcast_to(y.sum(0), pred.shape[::2])


def tune_thresholds(probs: np.ndarray, y: np.ndarray, shrink: float) -> np.ndarray:
    """Per genre, the grid threshold with the best F1 on these rows, shrunk toward the best global
    threshold: t = (n t_genre + shrink t_global) / (n + shrink), n = the genre's positives here."""
    tp, pp, ap = f1_curves(probs, y)
    f1 = 2 * tp / np.maximum(pp + ap, 1)
    t_genre = GRID[f1.argmax(0)]
    micro = 2 * tp.sum(1) / np.maximum(pp.sum(1) + ap.sum(1), 1)
    t_global = GRID[micro.argmax()]
    n = y.sum(0)
    return (n * t_genre + shrink * t_global) / (n + shrink)


def f1_pair(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(micro F1, macro F1) over the genres present."""
    tp, pp, ap = (pred & (y > 0)).sum(0), pred.sum(0), y.sum(0)
    micro = 2 * tp.sum() / max(pp.sum() + ap.sum(), 1)
    macro = np.mean(2 * tp / np.maximum(pp + ap, 1))
    return float(micro), float(macro)


def fold_scores(probs: np.ndarray, y: np.ndarray, fold: np.ndarray, shrink: float) -> list[tuple[float, float]]:
    """(micro, macro) on each dev fold, with thresholds tuned on the other folds."""
    out = []
    for k in range(fold.max() + 1):
        fit, held = (fold >= 0) & (fold != k), fold == k
        t = tune_thresholds(probs[fit], y[fit], shrink)
        out.append(f1_pair(y[held], decide(probs[held], t)))
    return out


def choose_thresholds(oof: np.ndarray, y: np.ndarray, fold: np.ndarray) -> tuple[np.ndarray, dict]:
    """Thresholds from all out-of-fold dev rows, with the shrinkage that scores best (mean of micro
    and macro F1) on held-out folds; plus the cross-validated scores behind that choice."""
    dev = fold >= 0
    cv = {s: fold_scores(oof, y, fold, s) for s in SHRINK}
    shrink = max(SHRINK, key=lambda s: np.mean(cv[s]))
    micro, macro = np.array(cv[shrink]).T
    info = {
        "shrink": shrink,
        "cv_by_shrink": {str(s): float(np.mean(v)) for s, v in cv.items()},
        "cv_micro_f1": {"mean": float(micro.mean()), "sd": float(micro.std(ddof=1))},
        "cv_macro_f1": {"mean": float(macro.mean()), "sd": float(macro.std(ddof=1))},
    }
    return tune_thresholds(oof[dev], y[dev], shrink), info


def bootstrap(y: np.ndarray, pred: np.ndarray, seed: int) -> dict:
    """95 % percentile intervals of micro and macro F1 over test rows resampled with replacement."""
    rng = np.random.default_rng(seed)
    draws = np.array([f1_pair(y[i], pred[i]) for i in rng.integers(0, len(y), (BOOTSTRAP, len(y)))])
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    return {"micro_f1_ci": [float(lo[0]), float(hi[0])], "macro_f1_ci": [float(lo[1]), float(hi[1])]}


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


def logistic(features, y, fold, seed: int, grid=(0.01, 0.1, 1.0), scale=True) -> np.ndarray:
    """One-vs-rest logistic regression: C chosen by held-out micro average precision over the dev
    folds; returns out-of-fold probabilities for dev rows and, for test rows, those of the model
    refitted on every dev row."""
    from sklearn.metrics import average_precision_score

    def fit(c, rows):
        steps = [StandardScaler()] if scale else []
        lr = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        return make_pipeline(*steps, OneVsRestClassifier(lr, n_jobs=2)).fit(features[rows], y[rows])

    best, best_ap = None, -1.0
    for c in grid:
        oof = np.zeros(y.shape, np.float64)
        for k in range(fold.max() + 1):
            held = fold == k
            oof[held] = fit(c, (fold >= 0) & ~held).predict_proba(features[held])
        ap = average_precision_score(y[fold >= 0], oof[fold >= 0], average="micro")
        if ap > best_ap:
            best, best_ap = (c, oof), ap
    c, probs = best
    test = fold < 0
    probs[test] = fit(c, fold >= 0).predict_proba(features[test])
    return probs


def candidates(cfg, movies, y, fold, embedded, tuned, trained) -> dict:
    """Every model in the table: id → (name, input mode, thunk giving probabilities for every row:
    out of fold on dev rows, from the all-dev model on test rows)."""
    frozen, image = embedded.plots_array(), embedded.posters_array()
    has_poster = (movies.poster != "").to_numpy(np.float32)[:, None]
    test = fold < 0
    z = np.load(tuned / "logits.npy")  # the shipped text model's logits
    oof_z = np.load(tuned / "oof_logits.npy")

    def text_model():
        return finetune.sigmoid(np.where(test[:, None], z, oof_z))

    def stacked(name, mode):
        def thunk():
            probs = fusion.load_oof(trained, name)[mode]
            head = fusion.load(trained, name)
            zz = z[test] if name == "head" else np.zeros_like(z[test])
            shown = has_poster[test] if mode == "plot+poster" else np.zeros_like(has_poster[test])
            probs[test] = fusion.stack_probs(head, zz, image[test], shown)
            return probs

        return thunk

    def tfidf():
        vec = TfidfVectorizer(min_df=2, max_features=50000, ngram_range=(1, 2), sublinear_tf=True, stop_words="english")
        vec.fit(movies.overview[fold >= 0])  # vocabulary from dev rows only (it sees no labels)
        return logistic(vec.transform(movies.overview), y, fold, cfg.seed, grid=(1.0, 4.0, 16.0), scale=False)

    return {
        "tfidf_lr": ("TF-IDF + logistic regression", "plot", tfidf),
        "text_lr": ("Frozen MiniLM plot embedding + LR", "plot", lambda: logistic(frozen, y, fold, cfg.seed)),
        "poster_lr": ("Frozen Lite0 poster embedding + LR", "poster", lambda: logistic(image, y, fold, cfg.seed)),
        "concat_lr": (
            "Frozen plot + poster embeddings + LR",
            "plot+poster",
            lambda: logistic(np.hstack([frozen, image]), y, fold, cfg.seed),
        ),
        "text_finetuned": ("Fine-tuned MiniLM alone", "plot", text_model),
        "poster_mlp": ("Poster MLP head on Lite0", "poster", stacked("poster_head", "plot+poster")),
        "fusion_plot_only": ("Shipped model, plot only", "plot", stacked("head", "plot")),
        "fusion": ("Shipped model, plot + poster", "plot+poster", stacked("head", "plot+poster")),
    }


def by_length(y, pred, words: np.ndarray) -> list[dict]:
    """Test F1 by plot length (word-count terciles): long plots must not score worse for truncation."""
    edges = np.percentile(words, [0, 100 / 3, 200 / 3, 100])
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        rows = (words >= lo) & (words <= hi) if hi == edges[-1] else (words >= lo) & (words < hi)
        micro, macro = f1_pair(y[rows], pred[rows])
        out.append({"words": [int(lo), int(hi)], "movies": int(rows.sum()), "micro_f1": micro, "macro_f1": macro})
    return out


def run(cfg) -> cache.Output:
    curated, tuned, embedded, trained = data.run(cfg), finetune.run(cfg), embed.run(cfg), fusion.run(cfg)
    parts = {
        "train": trained.key,
        "embed": embedded.key,
        "finetune": tuned.key,
        "code": CODE,
        "config": cfg.subset("default_threshold", "seed"),
    }

    def build(out: Path):
        movies, labels, y = data.load(curated)
        fold = movies.fold.to_numpy()
        dev, te = fold >= 0, fold < 0
        models, thresholds, probs = [], {}, {}
        for key, (name, mode, predict) in tqdm(
            candidates(cfg, movies, y, fold, embedded, tuned, trained).items(), desc="scoring models"
        ):
            probs[key] = predict()
            thresholds[key], cv = choose_thresholds(probs[key], y, fold)
            pred = decide(probs[key][te], thresholds[key])
            row = {"id": key, "name": name, "mode": mode, **scores(y[te], pred, labels), **cv}
            models.append(row | bootstrap(y[te], pred, cfg.seed))
        by_id = {m["id"]: m for m in models}
        peers = {
            mode: max(ids, key=lambda i: by_id[i]["cv_micro_f1"]["mean"]) for mode, ids in PEERS.items()
        }  # the best peer is chosen on dev folds too
        comparison = {
            mode: {
                "shipped": SHIPPED[mode],
                "best_peer": peers[mode],
                **{
                    f"{avg}_points": 100 * (by_id[SHIPPED[mode]][f"{avg}_f1"] - by_id[peers[mode]][f"{avg}_f1"])
                    for avg in ("micro", "macro")
                },
            }
            for mode in PEERS
        }
        words = movies.overview.str.split().str.len().to_numpy()[te]
        fixed = decide(probs["fusion"][te], np.full(len(labels), cfg.default_threshold))
        np.savez_compressed(out / "probs.npz", **probs)  # for the figures: curves, calibration
        metrics = {
            "labels": labels,
            "split": {"dev": int(dev.sum()), "test": int(te.sum())},
            "folds": int(fold.max() + 1),
            "epochs": {  # chosen by the folds: text fine-tuning (held-out AP), fusion head (early stopping)
                "text": json.loads((tuned / "history.json").read_text())["chosen_epochs"],
                "fusion": json.loads((trained / "history.json").read_text())["head"]["epochs"],
            },
            "bootstrap": BOOTSTRAP,
            "models": models,
            "comparison": comparison,
            "best": by_id["fusion"],
            "plot_only": by_id["fusion_plot_only"],
            "by_length": {
                m: by_length(y[te], decide(probs[SHIPPED[m]][te], thresholds[SHIPPED[m]]), words) for m in PEERS
            },
            "global_threshold": {
                "threshold": cfg.default_threshold,
                **dict(zip(("micro_f1", "macro_f1"), f1_pair(y[te], fixed))),
            },
            "thresholds": {mode: dict(zip(labels, thresholds[SHIPPED[mode]].tolist())) for mode in SHIPPED},
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))

    return cache.cached(cfg, "evaluate", parts, build)


def load(out: cache.Output) -> dict:
    return json.loads((out / "metrics.json").read_text())
