"""Stage `finetune`: the text transformer fine-tuned end to end on the extra rows' plots.

Flags as in the seed: --epochs --batch --accum --lr_head --lr_backbone --max_len --freeze_layers
--warmup_ratio. Bottom layers (and the embeddings) stay frozen; the rest learns at lr_backbone, a
linear head at lr_head; linear warm-up then decay over --epochs.

It learns from the extra rows `select` chose and from nothing else: it never sees a label of the
main data, so its embeddings and logits of every main-data row (dev and test) are honest features
for the heads stacked on it (`train`), with no cross-fitting of the encoder, and one fine-tune in all.
The number of epochs is fixed in config.toml. After each epoch the dev rows are scored (held-out
average precision, reported in the training curves, never used to choose anything).
"""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline import cache
from pipeline.learn import text, text_classifier
from pipeline.learn.text_classifier import (
    embeddings,
    train,
)
from pipeline.stages import data, select

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, text.__file__, text_classifier.__file__)


KEYS = ("text_backbone", "max_len", "epochs", "batch", "accum", "lr_head", "lr_backbone", "freeze_layers")


def encode_all(cfg, plots) -> tuple[list[list[int]], np.ndarray]:
    tok = text.load_tokenizer(cfg.text_backbone)
    encoded = [text.encode(tok, p, cfg.max_len) for p in plots]
    return encoded, np.array([len(e) for e in encoded])


def run(cfg) -> cache.Output:
    curated, selected = data.run(cfg), select.run(cfg)
    parts = {
        "data": curated.key,
        "select": selected.key,
        "config": cfg.subset(*KEYS, "warmup_ratio", "seed"),
        "code": CODE,
    }

    def build(out: Path):
        torch.set_num_threads(cfg.threads)
        movies, _, y = data.load(curated)
        extra, y_extra = data.load_extra(curated)
        rows = select.load(selected)
        n = len(movies)
        # one table: the main rows first (scored, never trained on), then the chosen extra rows
        encoded, lengths = encode_all(cfg, movies.overview.tolist() + extra.overview.iloc[rows].tolist())
        targets = np.vstack([y, y_extra[rows]]).astype(np.float32)
        fit = np.arange(n, len(encoded))
        dev = np.flatnonzero(movies.fold.to_numpy() >= 0)
        if len(fit):
            model, history, main = train(cfg, encoded, lengths, targets, fit, np.arange(n), dev)
        else:  # no extra rows: the pretrained encoder as it is and a head that adds no prior (all zeros), so the
            # heads (`train`, cross-fitted) learn from the dev rows alone; no main-set label reaches the encoder
            model, history = text_classifier.TextClassifier(cfg.text_backbone, y.shape[1]).eval(), []
            nn.init.zeros_(model.head.weight)
            nn.init.zeros_(model.head.bias)
            main = embeddings(model, encoded, lengths, np.arange(n))
        save_file({k: v.contiguous() for k, v in model.encoder.state_dict().items()}, str(out / "encoder.safetensors"))
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(out / "head.safetensors"))
        np.save(out / "embeddings.npy", main)
        (out / "history.json").write_text(json.dumps({"epochs": history, "extra_rows": len(fit)}, indent=1))

    return cache.cached(cfg, "finetune", parts, build)


def load_head(out: cache.Output) -> nn.Linear:
    """The fine-tuned classifier's linear head (text embedding → genre logits)."""
    from safetensors.torch import load_file

    state = load_file(str(out / "head.safetensors"))
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return head.eval()
