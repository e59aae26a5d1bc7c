"""Stage `train`: the heads learned from the dev rows, on top of a text encoder that never saw them.

Every head adds a correction to the text encoder's genre logits z = text_head(e):
    logits = z + mlp([z, standardised e, standardised poster * has_poster, has_poster])
  plot_head    text only (no poster inputs)
  fusion       text + poster, with modality dropout (rows shown without their poster), so it
               serves both input modes
  poster_head  poster only (no text at all: the Grad-CAM gallery and the results table)
The encoder's outputs (e) on the main rows are honest features: `finetune` learned from the extra
rows only, and the student (`distil`) from the teacher's outputs on plots, never a label. So only the
heads need cross-fitting: for each dev fold a head trains on the other folds (early stopping on a
random share of them) and predicts the held-out fold, in each input mode; those out-of-fold
probabilities are what every CV score and threshold is computed from. The shipped heads then train on
every dev row for the median epoch count the folds' early stopping chose, and predict the test rows.

`run(cfg)` trains the heads on the teacher's features, `run(cfg, "student")` on the student's.
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import cache
from pipeline.learn import fusion, text_classifier
from pipeline.learn.fusion import (
    HEADS,
    FusionHead,
    cross_fit,
)
from pipeline.stages import data, distil, embed, finetune

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, fusion.__file__)


KEYS = ("seed", "fusion_hidden", "fusion_dropout", "modality_dropout", "fusion_epochs", "fusion_lr")


KEYS += ("fusion_weight_decay", "fusion_batch", "patience", "balance", "stop_frac")


def features(cfg, encoder: str):
    """(cache output, text embeddings of every main row, the encoder's genre head) for "teacher" or "student"."""
    tuned = finetune.run(cfg)
    if encoder == "teacher":
        return tuned, np.load(tuned / "embeddings.npy"), finetune.load_head(tuned)
    distilled = distil.run(cfg)  # taught through the teacher's head: the student's logits are head(e)
    return distilled, np.load(distilled / "embeddings.npy"), finetune.load_head(tuned)


def run(cfg, encoder: str = "teacher") -> cache.Output:
    curated, embedded = data.run(cfg), embed.run(cfg)
    source, e, text_head = features(cfg, encoder)
    parts = {"text": source.key, "posters": embedded.posters.key, "config": cfg.subset(*KEYS), "code": CODE}

    def build(out: Path):
        movies, _, y = data.load(curated)
        image = embedded.posters_array()
        has_poster = (movies.poster != "").to_numpy(np.float32)[:, None]
        fold = movies.fold.to_numpy()
        probs, summary = {}, {}
        names = [n for n in HEADS if encoder == "teacher" or n != "poster_head"]
        for name in names:
            uses_text, uses_image = HEADS[name]
            drop = cfg.modality_dropout if name == "fusion" else 0.0
            ee = e if uses_text else np.zeros((len(e), 0), np.float32)
            th = text_head if uses_text else nn.Linear(0, y.shape[1])
            if not uses_text:
                nn.init.zeros_(th.bias)  # poster only: no text, no text prior
            got, summary[name], head = cross_fit(
                cfg, th, ee, image, has_poster, y, fold, use_image=uses_image, drop=drop
            )
            probs.update({f"{name}/{m}": p for m, p in got.items()})
            save(head, out, name)
        with torch.no_grad():  # the encoder alone: no head learned from the main rows
            z = text_head(torch.from_numpy(e)).numpy()
        probs["text_finetuned/plot"] = probs["text_finetuned/plot+poster"] = text_classifier.sigmoid(z)
        np.savez_compressed(out / "probs.npz", **probs)
        (out / "history.json").write_text(json.dumps(summary, indent=1))

    return cache.cached(cfg, "train" if encoder == "teacher" else "train_student", parts, build)


def save(head: FusionHead, out: Path, name: str):
    torch.save(head.state_dict(), out / f"{name}.pt")
    dims = {
        "text_dim": head.text_head.in_features,
        "image_dim": head.image_mean.shape[0] if head.use_image else 0,
        "n_labels": head.text_head.out_features,
        "hidden": head.mlp[1].out_features,
        "use_image": head.use_image,
    }
    (out / f"{name}.json").write_text(json.dumps(dims))


def load(out: cache.Output, name: str = "fusion") -> FusionHead:
    """A trained head by name ('plot_head', 'fusion', 'poster_head')."""
    dims = json.loads((out / f"{name}.json").read_text())
    head = FusionHead(dims["text_dim"], dims["image_dim"], dims["n_labels"], dims["hidden"], 0.0, dims["use_image"])
    head.load_state_dict(torch.load(out / f"{name}.pt"))
    return head.eval()


def load_probs(out: cache.Output) -> dict:
    """'model/mode' → probabilities for every main row (out of fold on dev rows, shipped heads on test)."""
    with np.load(out / "probs.npz") as f:
        return {k: f[k] for k in f.files}
