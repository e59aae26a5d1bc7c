"""Stage `lengths`: how well texts of every length are read, beside the TF-IDF peer and today's first window.

Three readers of the same texts (overviews, storylines, overview + storyline, long plots; `long_text`):
  windows       the shipped heads reading the whole text as `train` chose (stride, pooling, training rows), the
                bag of words blended in
  first window  the overviews-only fusion head reading the first 256 tokens alone (the reading before issue 28)
  TF-IDF + LR   the pipeline's TF-IDF peer, learning from the same rows as the shipped heads (dev overviews,
                the chosen extra rows, and the dev movies' texts of the chosen variant), C as evaluate chose it
Out of fold on dev movies (each text by the models that did not learn its fold); texts of test movies and
long plots tied to no main-set movie by the models trained on every dev row. Thresholds: each reader's own,
fitted on its out-of-fold overviews (thresholds.fit), as evaluate fits the shipped ones. Plot only: the peer
reads no poster. The test split's figures are read once per run, for the report; nothing here chooses.

The shipped files themselves (`export`, through the torch-free runtime, as `predict` runs them) score the
held-out long texts: long plots of test movies and of no main-set movie, and the test movies' storylines.
"""

import json
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from pipeline import cache
from pipeline.choose import thresholds
from pipeline.learn import logreg
from pipeline.runtime import rules
from pipeline.runtime.predict import BATCH
from pipeline.runtime.predictor import GenrePredictor
from pipeline.stages import data, evaluate, export, long_text, select, train

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__)

BANDS = ((0, 60), (60, 120), (120, 250), (250, None))  # words, issue 28: ≤ 60, 60-120, 120-250, > 250
READERS = ("windows", "first_window", "tfidf_lr")


def band_name(lo: int, hi: int | None) -> str:
    return f"≤ {hi}" if lo == 0 else (f"> {lo}" if hi is None else f"{lo}-{hi}")


def in_band(words: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    return (words > lo if lo else words >= 0) & (words <= hi if hi is not None else True)


def f1s(y, pred) -> dict:
    micro, macro = thresholds.f1_pair(y, pred)
    return {"micro": micro, "macro": macro, "texts": int(len(y))}


def peer_probs(cfg, movies, y, fold, curated, selected, texts, trainable, c_by_fold) -> tuple[np.ndarray, np.ndarray]:
    """TF-IDF + LR probabilities of the main rows' overviews and of the texts: out of fold for dev rows, the
    model on every dev row for the rest. Its vocabulary reads no test-movie text (as evaluate's)."""
    extra, y_extra = data.load_extra(curated)
    rows = select.load(selected)
    t_fold = texts.fold
    train_text = texts.texts_text[trainable]
    corpus = movies.overview.tolist() + extra.overview.iloc[rows].tolist() + list(train_text)
    y_all = np.vstack([y, y_extra[rows], texts.y[trainable]])
    fold_all = np.concatenate([fold, np.full(len(rows), logreg.EXTRA), t_fold[trainable]])
    vec = TfidfVectorizer(min_df=2, max_features=50000, ngram_range=(1, 2), sublinear_tf=True, stop_words="english")
    vec.fit([p for p, f in zip(corpus, fold_all) if f != -1])
    x_all, x_texts = vec.transform(corpus), vec.transform(texts.texts_text)
    over, out = np.full(y.shape, np.nan, np.float32), np.full(texts.y.shape, np.nan, np.float32)
    for k in [*sorted(int(f) for f in np.unique(fold[fold >= 0])), -1]:
        fit = (fold_all == logreg.EXTRA) | ((fold_all >= 0) & (fold_all != k))
        model = logreg.LogReg(c_by_fold[str(k) if k >= 0 else "test"], scale=False).fit(x_all[fit], y_all[fit])
        over[fold == k] = model.predict_proba(x_all[: len(y)][fold == k])
        out[t_fold == k] = model.predict_proba(x_texts[t_fold == k])
    return over, out


class Texts:
    """long_text's texts with what this stage needs beside them: their text, fold, words."""

    def __init__(self, lt: long_text.LongTexts, movies):
        self.table, self.y = lt.texts, lt.y
        tied = self.table.row.to_numpy() >= 0
        folds = movies.fold.to_numpy()
        self.fold = np.where(tied, folds[np.maximum(self.table.row.to_numpy(), 0)], -1)
        self.words = self.table.words.to_numpy()
        self.texts_text = self.table.text.to_numpy(object)


def run(cfg) -> cache.Output:
    curated, selected = data.run(cfg), select.run(cfg)
    trained, evaluated, exported, long = train.run(cfg), evaluate.run(cfg), export.run(cfg), long_text.run(cfg)
    parts = {
        "train": trained.key,
        "evaluate": evaluated.key,
        "export": exported.key,
        "long_text": long.key,
        "config": cfg.subset("threshold_shrinks", "tfidf_c", "seed"),
        "code": CODE,
    }

    def build(out: Path):
        movies, labels, y = data.load(curated)
        fold = movies.fold.to_numpy()
        metrics = evaluate.load(evaluated)
        chosen = train.load_windows(trained)
        head, head_mode = evaluate.OURS["plot"][metrics["shipped"]["plot"]]
        shrinks = thresholds.parse_shrinks(cfg.threshold_shrinks)
        words = movies.overview.str.split().str.len().to_numpy()
        shipped = train.load_probs(trained)[f"{head}/{head_mode}"]
        if chosen is None:  # no storylines nor long plots: the overviews by length, as the shipped heads read them
            pred = {"windows": rules.decide(shipped, thresholds.fit(shipped, y, fold, shrinks)[0])}
            report = {"reading": None, "bands": bands(y, fold, words, pred, None, {})}
            (out / "lengths.json").write_text(json.dumps(report, indent=1, allow_nan=False))
            return
        texts = Texts(long_text.LongTexts(long, labels), movies)
        probs = train.load_long_probs(trained)
        kinds = texts.table.kind.to_numpy()
        trainable = np.isin(kinds, train.VARIANTS[chosen["variant"]]) & (texts.fold >= 0)
        peer_over, peer_texts = peer_probs(
            cfg,
            movies,
            y,
            fold,
            curated,
            selected,
            texts,
            trainable,
            metrics["peers"]["c_by_fold"]["tfidf_lr"]["c_by_fold"],
        )
        overviews = {  # each reader's overview probabilities: its thresholds are fitted on them
            "windows": shipped,
            "first_window": probs[f"overviews_only/{head}/{head_mode}"],
            "tfidf_lr": peer_over,
        }
        on_texts = {
            "windows": probs[f"{head}/{head_mode}"],
            "first_window": probs[f"first_window/{head}/{head_mode}"],
            "tfidf_lr": peer_texts,
        }
        pred_over, pred_texts = {}, {}
        for r in READERS:
            cut, _ = thresholds.fit(overviews[r], y, fold, shrinks)
            pred_over[r] = rules.decide(overviews[r], cut)
            pred_texts[r] = rules.decide(on_texts[r], cut)
        report = {
            "reading": {k: chosen[k] for k in ("variant", "stride", "pool", "rule", "evidence", "blend")},
            "shipped_plot_model": metrics["shipped"]["plot"],
            "bands": bands(y, fold, words, pred_over, texts, pred_texts),
            "long_plots": long_plots(texts, pred_texts),
            "kinds": {
                kind: {
                    split: {r: f1s(texts.y[rows], pred_texts[r][rows]) for r in READERS}
                    for split, rows in (
                        ("dev", (kinds == kind) & (texts.fold >= 0)),
                        ("test", (kinds == kind) & (texts.fold == -1) & (texts.table.group.to_numpy() == "main")),
                    )
                    if rows.any()
                }
                for kind in ("storyline", "joined")
            },
            "shipped_files": shipped_files(exported, texts, pred_texts),
        }
        (out / "lengths.json").write_text(json.dumps(report, indent=1, allow_nan=False))

    return cache.cached(cfg, "lengths", parts, build)


def bands(y, fold, words_over, pred_over, texts: Texts | None, pred_texts) -> dict:
    """Per split (dev out of fold; test), per band: every reader's F1 on the main set's texts of that length
    (overviews, and when there are any: storylines, overview + storyline, long plots matched to a main-set movie)."""
    out = {}
    for split, over_rows in (("dev", fold >= 0), ("test", fold == -1)):
        out[split] = []
        for lo, hi in BANDS:
            a = over_rows & in_band(words_over, lo, hi)
            row = {"band": band_name(lo, hi)}
            for r, pred in pred_over.items():
                yy, pp = y[a], pred[a]
                if texts is not None:
                    main = texts.table.group.to_numpy() == "main"
                    held = texts.fold >= 0 if split == "dev" else texts.fold == -1
                    b = held & main & in_band(texts.words, lo, hi)
                    yy, pp = np.vstack([yy, texts.y[b]]), np.vstack([pp, pred_texts[r][b]])
                row[r] = f1s(yy, pp)
            out[split].append(row)
    return out


def long_plots(texts: Texts, pred_texts) -> dict:
    """long_plots by group: the headline (main-set movies out of fold or as test rows, and movies in no
    shared data), the rows whose overview trained the encoder, the rows matched by title alone."""
    t = texts.table
    is_long = t.kind.to_numpy() == "long_plot"
    group = t.group.to_numpy()
    sets = {
        "headline": is_long & np.isin(group, ["main", "unseen"]),
        "headline_over_250_words": is_long & np.isin(group, ["main", "unseen"]) & (texts.words > 250),
        "main_dev": is_long & (group == "main") & (texts.fold >= 0),
        "main_test": is_long & (group == "main") & (texts.fold == -1),
        "unseen": is_long & (group == "unseen"),
        "extra": is_long & (group == "extra"),
        "title_only": is_long & (group == "title_only"),
    }
    return {
        name: {r: f1s(texts.y[rows], pred_texts[r][rows]) for r in READERS} for name, rows in sets.items() if rows.any()
    }


def shipped_files(exported: cache.Output, texts: Texts, pred_texts) -> dict:
    """The shipped files on the held-out texts, read as `predict` reads them, beside the peer's answers."""
    predictor = GenrePredictor(exported.path)
    t = texts.table
    held = texts.fold == -1
    sets = {
        "long_plots": held & (t.kind.to_numpy() == "long_plot") & np.isin(t.group.to_numpy(), ["main", "unseen"]),
        "storylines": held & (t.kind.to_numpy() == "storyline"),
    }
    out = {}
    for name, rows in sets.items():
        idx = np.flatnonzero(rows)
        if not len(idx):
            continue
        plots = [str(texts.texts_text[i]) for i in idx]
        text = predictor.embed_plots(plots, BATCH)  # as predict's workers read them, BATCH windows a call
        probs = predictor.combine_windows(
            text, np.zeros((len(idx), predictor.image_dim), np.float32), np.zeros(len(idx)), BATCH, plots=plots
        )
        pred = np.stack([rules.decide(p, predictor.thresholds["plot"]) for p in probs])
        long = texts.words[idx] > 250
        out[name] = {
            "shipped": f1s(texts.y[idx], pred),
            "tfidf_lr": f1s(texts.y[idx], pred_texts["tfidf_lr"][idx]),
            **(
                {
                    "over_250_words": {
                        "shipped": f1s(texts.y[idx][long], pred[long]),
                        "tfidf_lr": f1s(texts.y[idx][long], pred_texts["tfidf_lr"][idx][long]),
                    }
                }
                if long.any()
                else {}
            ),
        }
    return out


def load(out: cache.Output) -> dict:
    return json.loads((out / "lengths.json").read_text())
