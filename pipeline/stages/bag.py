"""Stage `bag`: the bag of words the heads' probabilities are blended with (pipeline/runtime/bag.py).

A TF-IDF + logistic regression, as the TF-IDF peer of `evaluate` but small enough to ship (bag_terms terms, int8
weights): it learns from the dev movies' overviews and IMDb storylines and the chosen extra rows. Cross-fitted
like the heads: for each dev fold, the vocabulary, idf and weights come from the other folds' texts (and the
extra rows) and score the fold's overviews and texts; the shipped bag learns from every dev text and scores
the test movies' texts and the texts tied to no main-set movie. A test movie's text never trains it.
Its logits are computed by the runtime's own Bag from the files as written (rounded idf, int8 weights), so
what `train` blends and scores is what ships.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from pipeline import cache
from pipeline.learn import logreg
from pipeline.runtime import bag, rules
from pipeline.stages import data, long_text, select

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, bag.__file__, logreg.__file__, rules.__file__)
TRAINS = ("storyline",)  # the kinds of long_text's texts the bag learns from (joined ones repeat the overview)


def matrix(model: bag.Bag, texts: list[str]) -> sp.csr_matrix:
    """[texts, terms] TF-IDF rows, as the runtime computes them."""
    rows = [model.features(t) for t in texts]
    indptr = np.cumsum([0] + [len(i) for i, _ in rows])
    idx = np.concatenate([i for i, _ in rows] + [np.zeros(0, np.int64)])
    val = np.concatenate([v for _, v in rows] + [np.zeros(0)])
    return sp.csr_matrix((val, idx, indptr), shape=(len(texts), len(model.terms)))


def fit(cfg, labels: list[str], texts: list[str], y: np.ndarray, out: Path) -> bag.Bag:
    """The bag of `labels` learned from `texts`, written to `out` and read back as the runtime reads it."""
    vec = TfidfVectorizer(
        min_df=2, max_features=cfg.bag_terms, ngram_range=(1, 2), sublinear_tf=True, stop_words="english"
    ).fit(texts)
    terms, stop = sorted(vec.vocabulary_, key=vec.vocabulary_.get), vec.get_stop_words()
    # the features as the files will give them (idf as stored); the weights do not enter them
    features = bag.Bag(
        *bag.stored(labels, terms, vec.idf_, stop, np.zeros((len(terms), y.shape[1])), np.zeros(y.shape[1])),
        rules.MAX_CHARS,
    )
    model = logreg.LogReg(cfg.bag_c, scale=False).fit(matrix(features, texts), y)
    bag.write(out, *bag.stored(labels, terms, vec.idf_, stop, model.w.numpy(), model.b.numpy()))
    return bag.load(out, rules.MAX_CHARS)


def run(cfg) -> cache.Output:
    curated, selected, long = data.run(cfg), select.run(cfg), long_text.run(cfg)
    parts = {
        "data": curated.key,
        "select": selected.key,
        "long_text": long.key,
        "config": cfg.subset("bag_terms", "bag_c"),
        "code": CODE,
    }

    def build(out: Path):
        movies, labels, y = data.load(curated)
        extra, y_extra = data.load_extra(curated)
        chosen = select.load(selected)
        fold = movies.fold.to_numpy()
        table = pd.read_csv(long / "texts.csv", keep_default_na=False, dtype={"row": np.int64, "text": str})
        row = table.row.to_numpy()  # none when the run has no storylines nor long plots: overviews and extra rows
        t_fold = np.where(row >= 0, fold[np.maximum(row, 0)], -1)  # a text tied to no movie: scored like a test row
        t_y = data.multi_hot(table.genres, labels)
        learns = table.kind.isin(TRAINS).to_numpy()
        corpus = movies.overview.tolist() + extra.overview.iloc[chosen].tolist() + table.text[learns].tolist()
        y_all = np.vstack([y, y_extra[chosen], t_y[learns]])
        fold_all = np.concatenate([fold, np.full(len(chosen), logreg.EXTRA), t_fold[learns]])
        overviews = np.zeros(y.shape)
        texts = np.zeros(t_y.shape)
        tmp = out / "fold"
        tmp.mkdir()
        for k in [*sorted(int(f) for f in np.unique(fold[fold >= 0])), -1]:
            learn = (fold_all == logreg.EXTRA) | ((fold_all >= 0) & (fold_all != k))
            model = fit(cfg, labels, [corpus[i] for i in np.flatnonzero(learn)], y_all[learn], out if k == -1 else tmp)
            overviews[fold == k] = model.logits(movies.overview[fold == k].tolist())
            texts[t_fold == k] = model.logits(table.text[t_fold == k].tolist())
            print(f"[bag] fold {k}: {learn.sum()} texts, {len(model.terms)} terms", flush=True)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
        np.savez_compressed(out / "logits.npz", overviews=overviews, texts=texts)

    return cache.cached(cfg, "bag", parts, build)


def load_logits(out: cache.Output) -> tuple[np.ndarray, np.ndarray]:
    """(the main rows' overviews, long_text's texts): the bag's logits [rows, G], out of fold on dev movies."""
    with np.load(out / "logits.npz") as f:
        return f["overviews"], f["texts"]
