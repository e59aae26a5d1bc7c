"""Stage `train`: the fusion head, an MLP over [plot embedding, poster embedding, has-poster].

Trained with modality dropout (some rows shown without their poster) so that a plot alone, the
common demo case, still scores well. Early stopping on validation loss.
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import cache, data, embed

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__)


class FusionHead(nn.Module):
    def __init__(self, text_dim: int, image_dim: int, n_labels: int, hidden: int, dropout: float):
        super().__init__()
        # input standardisation, fitted on the training split and exported with the weights
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.register_buffer("text_std", torch.ones(text_dim))
        self.register_buffer("image_mean", torch.zeros(image_dim))
        self.register_buffer("image_std", torch.ones(image_dim))
        self.mlp = nn.Sequential(
            nn.Dropout(dropout / 2),
            nn.Linear(text_dim + image_dim + 1, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_labels),
        )

    def logits(self, text, image, has_poster):
        t = (text - self.text_mean) / self.text_std
        i = (image - self.image_mean) / self.image_std * has_poster  # no poster: zero image input
        return self.mlp(torch.cat([t, i, has_poster], dim=1))

    def forward(self, text, image, has_poster):
        """text [N, Dt], image [N, Di], has_poster [N, 1] (0 or 1) → genre probabilities [N, G]."""
        return torch.sigmoid(self.logits(text, image, has_poster))

    def fit_scaling(self, text: np.ndarray, image: np.ndarray, has_poster: np.ndarray):
        self.text_mean.copy_(torch.from_numpy(text.mean(0)))
        self.text_std.copy_(torch.from_numpy(text.std(0) + 1e-6))
        seen = image[has_poster[:, 0] > 0] if has_poster.any() else image
        self.image_mean.copy_(torch.from_numpy(seen.mean(0)))
        self.image_std.copy_(torch.from_numpy(seen.std(0) + 1e-6))


def tensors(text, image, has_poster, y=None):
    out = [torch.from_numpy(a).float() for a in (text, image, has_poster)]
    return out + ([torch.from_numpy(y).float()] if y is not None else [])


def balance_weights(y: np.ndarray, strength: float) -> np.ndarray:
    """Sampling weights that move genre frequencies toward uniform (the seed's balancing):
    each movie weighs the mean of 1/count over its genres, to the power `strength` (0 = off)."""
    inverse = 1.0 / np.maximum(y.sum(0), 1)
    per_movie = (y * inverse).sum(1) / np.maximum(y.sum(1), 1)
    w = per_movie**strength
    return w / w.sum()


def train_head(
    cfg, text, image, has_poster, y, split, modality_dropout=None, balance=None
) -> tuple[FusionHead, list[dict]]:
    """Train on the 'train' rows (resampled toward uniform genres when `balance` > 0), early-stop on
    'val' loss. A zero-width `text` gives a poster-only head."""
    drop = cfg.modality_dropout if modality_dropout is None else modality_dropout
    balance = cfg.balance if balance is None else balance
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tr, va = split == "train", split == "val"
    head = FusionHead(text.shape[1], image.shape[1], y.shape[1], cfg.fusion_hidden, cfg.fusion_dropout)
    head.fit_scaling(text[tr], image[tr], has_poster[tr])
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.fusion_lr, weight_decay=cfg.fusion_weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    t_tr, i_tr, p_tr, y_tr = tensors(text[tr], image[tr], has_poster[tr], y[tr])
    weights = balance_weights(y[tr], balance) if balance > 0 else None
    val = tensors(text[va], image[va], has_poster[va], y[va])
    best, best_loss, history, stale = None, float("inf"), [], 0
    for epoch in (bar := tqdm(range(cfg.fusion_epochs), desc="training fusion head")):
        head.train()
        n = len(y_tr)
        order = torch.from_numpy(rng.permutation(n) if weights is None else rng.choice(n, n, p=weights))
        total = 0.0
        for start in range(0, len(order), cfg.fusion_batch):
            rows = order[start : start + cfg.fusion_batch]
            shown = p_tr[rows] * (torch.from_numpy(rng.random((len(rows), 1))) >= drop).float()
            loss = loss_fn(head.logits(t_tr[rows], i_tr[rows], shown), y_tr[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        head.eval()
        with torch.no_grad():
            val_loss = loss_fn(head.logits(*val[:3]), val[3]).item()
        history.append({"epoch": epoch + 1, "train_loss": total / len(y_tr), "val_loss": val_loss})
        bar.set_postfix(train=f"{total / len(y_tr):.4f}", val=f"{val_loss:.4f}")
        if val_loss < best_loss - 1e-5:
            best, best_loss, stale = {k: v.clone() for k, v in head.state_dict().items()}, val_loss, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    head.load_state_dict(best)
    return head.eval(), history


def run(cfg) -> cache.Output:
    curated, embedded = data.run(cfg), embed.run(cfg)
    keys = ("seed", "fusion_hidden", "fusion_dropout", "modality_dropout", "fusion_epochs", "fusion_lr")
    parts = {
        "embed": embedded.key,
        "config": cfg.subset(*keys, "fusion_weight_decay", "fusion_batch", "patience", "balance"),
        "code": CODE,
    }

    def build(out: Path):
        movies, labels, y = data.load(curated)
        _, text, image = embedded.load()
        has_poster = (movies.poster != "").to_numpy(np.float32)[:, None]
        split = movies.split.to_numpy()
        head, history = train_head(cfg, text, image, has_poster, y, split)
        save(head, out, "head", text.shape[1], image.shape[1], cfg.fusion_hidden)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        # the seed's balancing, for the report: same head, training rows resampled toward uniform genres
        balanced, _ = train_head(cfg, text, image, has_poster, y, split, balance=1.0)
        save(balanced, out, "balanced_head", text.shape[1], image.shape[1], cfg.fusion_hidden)
        # the poster model on its own (poster-only results, Grad-CAM): the same head, no text input
        no_text = np.zeros((len(y), 0), np.float32)
        poster_head, poster_history = train_head(cfg, no_text, image, has_poster, y, split, modality_dropout=0.0)
        save(poster_head, out, "poster_head", 0, image.shape[1], cfg.fusion_hidden)
        (out / "poster_history.json").write_text(json.dumps(poster_history, indent=1))

    return cache.cached(cfg, "train", parts, build)


def save(head: FusionHead, out: Path, name: str, text_dim: int, image_dim: int, hidden: int):
    torch.save(head.state_dict(), out / f"{name}.pt")
    n_labels = head.mlp[-1].out_features
    dims = {"text_dim": text_dim, "image_dim": image_dim, "n_labels": n_labels, "hidden": hidden}
    (out / f"{name}.json").write_text(json.dumps(dims))


def load(out: cache.Output, name: str = "head") -> FusionHead:
    """The trained fusion head ('head'), its balanced twin ('balanced_head') or the poster-only head ('poster_head')."""
    dims = json.loads((out / f"{name}.json").read_text())
    head = FusionHead(dims["text_dim"], dims["image_dim"], dims["n_labels"], dims["hidden"], 0.0)
    head.load_state_dict(torch.load(out / f"{name}.pt"))
    return head.eval()
