"""The bag of words (pipeline/runtime/bag.py): its features are scikit-learn's TF-IDF, its files read back as
written, its blend is its formula; and the stage's choice of weight (pipeline/choose/windows.choose_blend)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from pipeline.choose import windows
from pipeline.runtime import bag, rules
from tests import tiny_data

ODD = [
    "",
    "a I x",  # no token of two characters
    "The the THE and of",  # stop words only
    "Café naïve Ærø İstanbul ΟΔΟΣ straße",  # lower-casing beyond ASCII
    "e\u0301cole x\u0301y",  # combining marks split tokens, as Python's \\w does
    "snake_case under_score 42nd 1984 ½ ²3",  # digits, "_", other numbers
    "don't rock-'n'-roll U.S.A. e-mail",
    "鬼滅の刃 東京 タワー",
    "emoji 🎬 between 👍🏽 words",
    "heist heist heist heist crew crew",  # counts above 1: 1 + ln(count)
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    folder = tiny_data.make(tmp_path_factory.mktemp("tiny") / "data")
    return pd.read_csv(folder / "movies.csv", keep_default_na=False).overview.tolist() + ODD


def fitted(corpus: list[str], terms: int | None = None) -> tuple[TfidfVectorizer, bag.Bag]:
    """A vectorizer as stage `bag` fits it, and the runtime Bag holding its vocabulary and exact idf."""
    vec = TfidfVectorizer(min_df=1, max_features=terms, ngram_range=(1, 2), sublinear_tf=True, stop_words="english")
    vec.fit(corpus)
    names = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    spec = {"genres": ["Drama"], "terms": names, "idf": vec.idf_.tolist(), "stop_words": sorted(vec.get_stop_words())}
    spec["scale"] = [1.0]
    return vec, bag.Bag({**spec, "bias": [0.0]}, np.zeros(len(names), np.int8).tobytes(), rules.MAX_CHARS)


@pytest.mark.parametrize("terms", [None, 50])
def test_features_are_scikit_learns_tfidf(corpus, terms):
    """Every text's row (words and pairs of words, stop words out, sublinear tf, idf, unit length) is the one
    scikit-learn's TfidfVectorizer computes, whole vocabulary or pruned to its most frequent terms."""
    vec, model = fitted(corpus, terms)
    want = vec.transform(corpus).toarray()
    for text, row in zip(corpus, want):
        idx, values = model.features(text)
        got = np.zeros(len(model.terms))
        got[idx] = values
        np.testing.assert_allclose(got, row, atol=1e-12)  # float64 either side, summed in another order
    assert (want.sum(1) == 0).any() and (want.sum(1) > 0).any()  # texts with and without a known term


def test_the_cut_is_the_windows_cut(corpus):
    """The bag reads the first max_chars characters, as the windows do."""
    _, model = fitted(corpus)
    word = model.terms[0].split()[0]
    text = ("x " * (rules.MAX_CHARS // 2)) + word
    assert len(text) > rules.MAX_CHARS and word not in model.words(text) and word in model.words(word)


def test_files_read_back_as_written(tmp_path, corpus):
    """bag.stored rounds the idf and stores int8 weights with a scale per genre; write and load keep exactly
    those, and the logits are x . (int8 * scale) + bias, each weight within half a step of the float one."""
    vec, _ = fitted(corpus)
    names = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(len(names), 3)), rng.normal(size=3)
    spec, weights = bag.stored(["Action", "Comedy", "Drama"], names, vec.idf_, vec.get_stop_words(), w, b)
    bag.write(tmp_path, spec, weights)
    model = bag.load(tmp_path, rules.MAX_CHARS)
    in_memory = bag.Bag(spec, weights, rules.MAX_CHARS)
    assert np.array_equal(in_memory.w, model.w) and np.array_equal(in_memory.idf, model.idf)
    scale = np.array(spec["scale"])
    assert (np.abs(model.w - w) <= scale / 2 * (1 + 1e-6)).all()  # each genre within half its own step
    assert np.array_equal(model.idf, np.round(vec.idf_, 5))
    for text in corpus[:20]:
        idx, v = model.features(text)
        np.testing.assert_allclose(model.logits([text])[0], v @ model.w[idx] + model.b, atol=1e-12)


def test_blend_is_its_formula():
    p = np.array([0.0, 1e-9, 0.3, 0.5, 1.0], np.float32)
    z = np.array([5.0, -2.0, 0.0, 40.0, -40.0])
    assert bag.blend(p, z, 0.0) is p  # weight 0: the heads' probabilities, untouched
    sigmoid = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(bag.blend(p, z, 1.0), sigmoid, rtol=1e-6)  # weight 1: the bag alone
    got = bag.blend(p, z, 0.3)
    clipped = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    want = 1 / (1 + np.exp(-(0.7 * np.log(clipped / (1 - clipped)) + 0.3 * z)))
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6)


def score(over: float, texts: float) -> dict:
    return {"overviews": {"plot": {"micro": over, "macro": over}}, "texts": {"plot": {"micro": texts, "macro": texts}}}


@pytest.mark.parametrize(
    "evidence, chosen",
    [
        ({0.0: score(0.60, 0.60), 0.2: score(0.61, 0.63), 0.4: score(0.61, 0.62)}, 0.2),  # the best on texts
        ({0.0: score(0.60, 0.60), 0.2: score(0.59, 0.65)}, 0.0),  # overviews lose 1 point: not eligible
        ({0.0: score(0.60, 0.60), 0.2: score(0.60 - windows.OVERVIEW_BOUND * 2 / 3, 0.65)}, 0.2),  # within the bound
        ({0.0: score(0.60, 0.62), 0.3: score(0.61, 0.62), 0.1: score(0.61, 0.62)}, 0.0),  # ties: the smaller
    ],
)
def test_blend_weight_choice(evidence, chosen):
    assert windows.choose_blend(evidence) == chosen
