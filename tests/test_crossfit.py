"""Out-of-fold features: a row's stacked features never depend on its own labels.

The fine-tuned text model's logits for a dev row come from the fold model that held the row out,
and so do the fusion head's out-of-fold probabilities: changing that row's labels must leave them
exactly as they were, while changing a training row's labels must not (or the test proves nothing).
"""

import numpy as np
import pytest

from pipeline import config, finetune, fusion, text
from tests import tiny_data


@pytest.fixture(scope="module")
def plots(tmp_path_factory):
    import pandas as pd

    folder = tiny_data.make(tmp_path_factory.mktemp("crossfit") / "data")
    movies = pd.read_csv(folder / "movies.csv", keep_default_na=False)
    labels = sorted(tiny_data.GENRES)
    y = np.array([[float(g in row.split("|")) for g in labels] for row in movies.genres], np.float32)
    return movies.overview.tolist()[:24], y[:24]


def tiny_cfg(**kw):
    cfg = config.load()
    cfg.update(epochs=1, batch=8, max_len=48, fusion_epochs=5, fusion_hidden=16, patience=5, **kw)
    return cfg


def flip(y, row):
    y = y.copy()
    y[row] = 1 - y[row]
    return y


def test_text_logits_of_held_rows_ignore_their_labels(plots):
    docs, y = plots
    cfg = tiny_cfg()
    tok = text.load_tokenizer(cfg.text_backbone)
    encoded = [text.encode(tok, p, cfg.max_len) for p in docs]
    lengths = np.array([len(e) for e in encoded])
    fit, held = np.arange(16), np.arange(16, 24)
    _, _, base = finetune.train(cfg, encoded, lengths, y, fit, held)
    _, _, same = finetune.train(cfg, encoded, lengths, flip(y, held[0]), fit, held)
    np.testing.assert_array_equal(base, same)
    _, _, moved = finetune.train(cfg, encoded, lengths, flip(y, fit[0]), fit, held)
    assert np.abs(moved - base).max() > 0  # a training row's labels do reach the held-out logits


@pytest.mark.parametrize("modality_dropout", [0.0, 0.3])
def test_fusion_out_of_fold_probabilities_ignore_their_labels(modality_dropout):
    rng = np.random.default_rng(0)
    n, g = 60, 4
    z, image = rng.normal(size=(n, g)).astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)
    has_poster = np.ones((n, 1), np.float32)
    y = (rng.random((n, g)) < 0.4).astype(np.float32)
    fold = np.arange(n) % 3
    cfg = tiny_cfg(modality_dropout=modality_dropout)
    base, _, _ = fusion.cross_fit(cfg, z, image, has_poster, y, fold)
    row = 5  # fold 2
    same, _, _ = fusion.cross_fit(cfg, z, image, has_poster, flip(y, row), fold)
    for mode in base:
        np.testing.assert_array_equal(base[mode][row], same[mode][row])
        assert np.abs(base[mode][fold != fold[row]] - same[mode][fold != fold[row]]).max() > 0
