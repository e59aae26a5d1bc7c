"""Stage `evaluate`: every model judged the same way: chosen on dev folds, scored once on test.

Each model has out-of-fold probabilities for every dev row and test probabilities from its version
trained on all dev rows (and the chosen extra rows). Thresholds per genre and per input mode are
tuned on the out-of-fold rows, shrunk toward one global threshold by a strength chosen by CV
(pipeline/choose/thresholds.py); every CV score is that of thresholds fitted on the other folds, strength
included (nested). The peers (logistic regression on
TF-IDF, on the frozen plot embedding, on the poster embedding, on both) train on exactly the rows the
shipped model learned from (dev + chosen extra rows) with C chosen inside each fold.

Choices, all on out-of-fold rows: the model per input mode (the head CV scores best) and the best peer.
The test split is read only to report: F1 with bootstrap 95 % intervals, and the paired bootstrap of the margin over the best
peer (the same resamples for both models).
"""

import json
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import precision_recall_fscore_support
from tqdm import tqdm

from pipeline import cache
from pipeline.choose import model_choice, thresholds
from pipeline.choose.model_choice import cv_scores, cv_value
from pipeline.choose.thresholds import f1_pair, global_threshold
from pipeline.learn import fusion, logreg, text
from pipeline.runtime import rules
from pipeline.runtime.rules import decide
from pipeline.stages import data, embed, select, train

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, model_choice.__file__, logreg.__file__, rules.__file__, thresholds.__file__)


BOOTSTRAP = 1000


MODES = fusion.MODES


# the simple models ours must beat, by input mode: a plot + poster visitor could use any of them
PEERS = {"plot": ("tfidf_lr", "text_lr"), "plot+poster": ("tfidf_lr", "text_lr", "poster_lr", "concat_lr")}


# our candidates per input mode: model id → (head in the train stage's probabilities, mode it runs in)
OURS = {
    "plot": {
        "text_finetuned": ("text_finetuned", "plot"),
        "plot_head": ("plot_head", "plot"),
        "fusion_plot_only": ("fusion", "plot"),
    },
    "plot+poster": {
        "fusion": ("fusion", "plot+poster"),
        "plot_head": ("plot_head", "plot"),
        "text_finetuned": ("text_finetuned", "plot"),
    },
}


NAMES = {
    "tfidf_lr": ("TF-IDF + logistic regression", "plot"),
    "text_lr": ("Frozen MiniLM plot embedding + LR", "plot"),
    "poster_lr": ("Frozen Lite0 poster embedding + LR", "poster"),
    "concat_lr": ("Frozen plot + poster embeddings + LR", "plot+poster"),
    "text_finetuned": ("Fine-tuned MiniLM alone", "plot"),
    "plot_head": ("Fine-tuned MiniLM + plot head", "plot"),
    "fusion_plot_only": ("Fusion head, plot only", "plot"),
    "fusion": ("Fusion head, plot + poster", "plot+poster"),
    "poster_mlp": ("Poster MLP head on Lite0", "poster"),
}


def bootstrap(y: np.ndarray, pred: np.ndarray, seed: int, other: np.ndarray | None = None) -> dict:
    """95 % percentile intervals of micro and macro F1 over test rows resampled with replacement;
    with `other`, of the paired difference pred − other on the same resamples."""
    rng = np.random.default_rng(seed)
    draws = []
    for i in rng.integers(0, len(y), (BOOTSTRAP, len(y))):
        a = np.array(f1_pair(y[i], pred[i]))
        draws.append(a if other is None else a - np.array(f1_pair(y[i], other[i])))
    lo, hi = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
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


def decision_stats(y: np.ndarray, pred: np.ndarray) -> dict:
    """Mean predicted genres per movie and micro precision / recall: are the thresholds calibrated?"""
    tp = (pred & (y > 0)).sum()
    return {
        "genres_per_movie": float(pred.sum(1).mean()),
        "true_genres_per_movie": float(y.sum(1).mean()),
        "micro_precision": float(tp / max(pred.sum(), 1)),
        "micro_recall": float(tp / max(y.sum(), 1)),
    }


def peer_probs(cfg, movies, y, fold, embedded, curated, selected) -> dict:
    """Peer id → probabilities for every main row; each trains on the dev rows and the chosen extra rows."""
    extra, y_extra = data.load_extra(curated)
    rows = select.load(selected)
    n_extra = len(rows)
    y_all = np.vstack([y, y_extra[rows]])
    fold_all = np.concatenate([fold, np.full(n_extra, logreg.EXTRA)])
    image = embedded.posters_array()
    has = (movies.poster != "").to_numpy(np.float32)[:, None]
    frozen = np.vstack([embedded.plots_array(), embedded.extra_plots_array()[rows]])
    c_grid = [float(c) for c in str(cfg.peer_c).split(",")]
    plots = movies.overview.tolist() + extra.overview.iloc[rows].tolist()
    info = {}

    def nested(x, grid, scale=True, which=None):
        keep = np.arange(len(y_all)) if which is None else which
        p, info_ = logreg.nested_probs(x[keep], y_all[keep], fold_all[keep], grid, scale)
        return p[: len(y)], info_

    def tfidf():
        vec = TfidfVectorizer(min_df=2, max_features=50000, ngram_range=(1, 2), sublinear_tf=True, stop_words="english")
        train_text = [p for p, f in zip(plots, fold_all) if f != -1]  # the vocabulary never reads a test plot
        vec.fit(train_text)
        return nested(vec.transform(plots), [float(c) for c in str(cfg.tfidf_c).split(",")], scale=False)

    posters_all = np.vstack([image * has, np.zeros((n_extra, image.shape[1]), np.float32)])
    has_all = np.vstack([has, np.zeros((n_extra, 1), np.float32)])
    makers = {
        "tfidf_lr": tfidf,
        "text_lr": lambda: nested(frozen, c_grid),
        # posters exist only on the main rows: the poster-only peer learns from the dev posters
        "poster_lr": lambda: nested(posters_all, c_grid, which=np.arange(len(y))),
        "concat_lr": lambda: nested(np.hstack([frozen, posters_all, has_all]), c_grid),
    }
    out = {}
    for name, make in tqdm(makers.items(), desc="peers (nested C)"):
        out[name], info[name] = make()
    return out, info


def row_for(key, probs, y, fold, labels, shrinks, seed, name=None, mode=None):
    """A model's table row: thresholds fitted on all out-of-fold rows (the strength chosen by CV over the
    dev folds), CV scores (nested), test scores with intervals. Returns (row, thresholds)."""
    te = fold == -1
    cut, shrink = thresholds.fit(probs, y, fold, shrinks)
    pred = decide(probs[te], cut)
    name_, mode_ = NAMES.get(key, (key, mode))
    row = {
        "id": key,
        "name": name or name_,
        "mode": mode or mode_,
        "threshold_shrink": thresholds.as_json(shrink),
    }
    row.update(scores(y[te], pred, labels) | cv_scores(probs, y, fold, shrinks))
    return row | bootstrap(y[te], pred, seed), cut


def run(cfg) -> cache.Output:
    curated, embedded, selected = data.run(cfg), embed.run(cfg), select.run(cfg)
    trained = train.run(cfg)
    parts = {
        "train": trained.key,
        "embed": embedded.key,
        "select": selected.key,
        "code": CODE,
        "config": cfg.subset("default_threshold", "threshold_shrinks", "peer_c", "tfidf_c", "seed"),
    }

    def build(out: Path):
        movies, labels, y = data.load(curated)
        fold = movies.fold.to_numpy()
        dev, te = fold >= 0, fold == -1
        probs, peer_info = peer_probs(cfg, movies, y, fold, embedded, curated, selected)
        heads = train.load_probs(trained)
        probs["poster_mlp"] = heads["poster_head/plot+poster"]
        for ids in OURS.values():
            for key, (head, head_mode) in ids.items():
                probs[key] = heads[f"{head}/{head_mode}"]
        shrinks = thresholds.parse_shrinks(cfg.threshold_shrinks)
        models, cuts = [], {}
        for key in tqdm(probs, desc="scoring models"):
            row, cuts[key] = row_for(key, probs[key], y, fold, labels, shrinks, cfg.seed)
            models.append(row)
        by_id = {m["id"]: m for m in models}

        # choices on out-of-fold rows only: the model per mode, the best peer
        shipped = {mode: max(ids, key=lambda i: cv_value(by_id[i])) for mode, ids in OURS.items()}
        peers = {mode: max(ids, key=lambda i: cv_value(by_id[i])) for mode, ids in PEERS.items()}

        comparison = {}
        for mode in MODES:
            ours, peer = shipped[mode], peers[mode]
            pred_ours = decide(probs[ours][te], cuts[ours])
            pred_peer = decide(probs[peer][te], cuts[peer])
            comparison[mode] = {
                "shipped": ours,
                "best_peer": peer,
                **{f"{a}_points": 100 * (by_id[ours][f"{a}_f1"] - by_id[peer][f"{a}_f1"]) for a in ("micro", "macro")},
                "paired_points_ci": {
                    k: [100 * v for v in ci] for k, ci in bootstrap(y[te], pred_ours, cfg.seed, pred_peer).items()
                },
            }

        # thresholds vs the shipped model's score distribution: out of fold and on test, side by side
        oof_vs_test, global_vs_shipped, strength_evidence = {}, {}, {}
        for mode in MODES:
            key = shipped[mode]
            # the evidence behind the shipped strength: each strength's CV (micro, macro) over the dev folds
            strength_evidence[mode] = [
                {"pull": thresholds.as_json(s), "micro_f1": v[0], "macro_f1": v[1]}
                for s, v in thresholds.strength_cv(probs[key], y, fold, shrinks).items()
            ]
            oof_pred, _ = thresholds.oof_decisions(probs[key], y, fold, shrinks)
            oof_vs_test[mode] = {
                "out_of_fold": decision_stats(y[dev], oof_pred[dev]),
                "test": decision_stats(y[te], decide(probs[key][te], cuts[key])),
            }
            t_global = global_threshold(probs[key][dev], y[dev])
            g = dict(
                zip(("micro_f1", "macro_f1"), f1_pair(y[te], decide(probs[key][te], np.full(len(labels), t_global))))
            )
            seed_t = decide(probs[key][te], np.full(len(labels), cfg.default_threshold))
            global_vs_shipped[mode] = {
                "shipped": {"micro_f1": by_id[key]["micro_f1"], "macro_f1": by_id[key]["macro_f1"]},
                "global_out_of_fold": {"threshold": t_global, **g},
                "seed": {
                    "threshold": cfg.default_threshold,
                    **dict(zip(("micro_f1", "macro_f1"), f1_pair(y[te], seed_t))),
                },
            }

        tok = text.load_tokenizer(cfg.text_backbone)
        tokens = np.array([len(tok.encode(p).ids) for p in movies.overview[te]])
        np.savez_compressed(out / "probs.npz", **probs)  # for the figures and the error analysis
        metrics = {
            "labels": labels,
            "split": {"dev": int(dev.sum()), "test": int(te.sum())},
            "folds": len(thresholds.fold_ids(fold)),
            "extra_rows": int(len(select.load(selected))),
            "extra_choice": json.loads((selected / "selected.json").read_text()),
            "epochs": {
                "text": cfg.epochs,
                **{h: s["epochs"] for h, s in json.loads((trained / "history.json").read_text()).items()},
            },
            "bootstrap": BOOTSTRAP,
            "threshold_shrinks": [thresholds.as_json(s) for s in shrinks],
            "threshold_shrink": {mode: by_id[shipped[mode]]["threshold_shrink"] for mode in MODES},
            "threshold_shrink_cv": strength_evidence,
            "models": models,
            "shipped": shipped,
            "peers": {"best": peers, "c_by_fold": peer_info},
            "comparison": comparison,
            "best": by_id[shipped["plot+poster"]],
            "plot_only": by_id[shipped["plot"]],
            "test_tokens": {
                "max_len": cfg.max_len,
                "longest": sorted(tokens.tolist())[-5:],
                "over_window": int((tokens > cfg.max_len).sum()),
            },
            "oof_vs_test": oof_vs_test,
            "global_threshold": global_vs_shipped,
            "thresholds": {mode: dict(zip(labels, cuts[shipped[mode]].tolist())) for mode in MODES},
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False))

    return cache.cached(cfg, "evaluate", parts, build)


def load(out: cache.Output) -> dict:
    return json.loads((out / "metrics.json").read_text())
