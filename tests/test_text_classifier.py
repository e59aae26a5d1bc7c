"""pipeline/learn/text_classifier.py: what fine-tuning returns, down to no epochs at all."""

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.learn import text, text_classifier


@pytest.mark.parametrize("epochs", [0, 1])
def test_train_returns_the_embeddings_of_its_last_encoder(epochs):
    cfg = SimpleNamespace(
        seed=0,
        text_backbone="minilm",
        freeze_layers=2,
        lr_backbone=5e-5,
        lr_head=1e-3,
        epochs=epochs,
        batch=4,
        accum=1,
        warmup_ratio=0.1,
    )
    tok = text.load_tokenizer("minilm")
    plots = ["A detective hunts a killer.", "Two friends sing at a wedding.", "A ship sinks at sea.", "Aliens land."]
    encoded = [text.encode(tok, p, 32) for p in plots * 2]
    lengths = np.array([len(e) for e in encoded])
    y = np.eye(4, dtype=np.float32)[[0, 1, 2, 3] * 2]
    embed_rows, fit = np.arange(4), np.arange(4, 8)
    model, history, embedded = text_classifier.train(cfg, encoded, lengths, y, fit, embed_rows, np.arange(4))
    assert len(history) == epochs and embedded.shape == (4, model.encoder.dim)
    # the rows as the returned (trained, or with no epoch the pretrained) encoder embeds them now: the same call
    # on the same model and batches, so the same bits
    again = text_classifier.embeddings(model, encoded, lengths, embed_rows)
    np.testing.assert_array_equal(embedded, again)
