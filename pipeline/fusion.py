"""Stage `train`: the fusion head, stacked on the fine-tuned text model's out-of-fold logits.

The head sees [text logits, poster embedding, has-poster] and adds a correction to the text logits:
    logits = z + mlp([z, standardised poster * has_poster, has_poster]),   z = text_head(text embedding)
It trains on out-of-fold text logits (from `finetune`'s fold models), so it learns how far to trust
text of the quality it will meet on new movies. Modality dropout (rows shown without their poster)
keeps a plot alone, the common demo case, scoring well.

Cross-fitted again one level up: for each dev fold a head trains on the other folds and predicts the
held-out one in both input modes; those out-of-fold probabilities are what thresholds are tuned on.
The shipped head then trains on every dev row for the median epoch count the folds' early stopping
chose. A poster-only head (Grad-CAM gallery, results table) is trained the same way.
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import cache, data, embed, finetune

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__)

KEYS = ("seed", "fusion_hidden", "fusion_dropout", "modality_dropout", "fusion_epochs", "fusion_lr")
KEYS += ("fusion_weight_decay", "fusion_batch", "patience", "balance", "stop_frac")


class FusionHead(nn.Module):
    def __init__(self, text_dim: int, image_dim: int, n_labels: int, hidden: int, dropout: float):
        super().__init__()
        self.text_head = nn.Linear(text_dim, n_labels)  # the fine-tuned classifier's head, copied in
        self.text_head.requires_grad_(False)
        # poster standardisation, fitted on the training rows and exported with the weights
        self.register_buffer("image_mean", torch.zeros(image_dim))
        self.register_buffer("image_std", torch.ones(image_dim))
        self.mlp = nn.Sequential(
            nn.Dropout(dropout / 2),
            nn.Linear(n_labels + image_dim + 1, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_labels),
        )

    def stack_logits(self, z, image, has_poster):
        """Genre logits from text logits z [N, G], poster embedding [N, Di] and has_poster [N, 1]."""
        i = (image - self.image_mean) / self.image_std * has_poster  # no poster: zero image input
        return z + self.mlp(torch.cat([z, i, has_poster], dim=1))

    def logits(self, text, image, has_poster):
        return self.stack_logits(self.text_head(text), image, has_poster)

    def forward(self, text, image, has_poster):
        """text [N, Dt], image [N, Di], has_poster [N, 1] (0 or 1) → genre probabilities [N, G]."""
        return torch.sigmoid(self.logits(text, image, has_poster))

    def fit_scaling(self, image: np.ndarray, has_poster: np.ndarray):
        seen = image[has_poster[:, 0] > 0] if has_poster.any() else image
        self.image_mean.copy_(torch.from_numpy(seen.mean(0)))
        # a floor: a feature (nearly) constant over the training posters must not blow up on a new one
        self.image_std.copy_(torch.from_numpy(np.maximum(seen.std(0), 1e-2)))


def tensors(*arrays):
    return [torch.from_numpy(np.ascontiguousarray(a)).float() for a in arrays]


def balance_weights(y: np.ndarray, strength: float) -> np.ndarray:
    """Sampling weights that move genre frequencies toward uniform (the seed's balancing):
    each movie weighs the mean of 1/count over its genres, to the power `strength` (0 = off)."""
    inverse = 1.0 / np.maximum(y.sum(0), 1)
    per_movie = (y * inverse).sum(1) / np.maximum(y.sum(1), 1)
    w = per_movie**strength
    return w / w.sum()


def new_head(cfg, z, image) -> FusionHead:
    return FusionHead(0, image.shape[1], z.shape[1], cfg.fusion_hidden, cfg.fusion_dropout)


def train_head(cfg, z, image, has_poster, y, fit, stop=None, epochs=None, modality_dropout=None):
    """Train the stacking MLP on rows `fit` (text logits z, posters, labels).

    With `stop` rows: early stopping on their loss (patience cfg.patience). Without: exactly
    `epochs` epochs. Returns (head, history, epochs run until the best state)."""
    drop = cfg.modality_dropout if modality_dropout is None else modality_dropout
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = new_head(cfg, z, image)
    head.fit_scaling(image[fit], has_poster[fit])
    opt = torch.optim.AdamW(head.mlp.parameters(), lr=cfg.fusion_lr, weight_decay=cfg.fusion_weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    z_tr, i_tr, p_tr, y_tr = tensors(z[fit], image[fit], has_poster[fit], y[fit])
    weights = balance_weights(y[fit], cfg.balance) if cfg.balance > 0 else None
    held = tensors(z[stop], image[stop], has_poster[stop], y[stop]) if stop is not None else None
    best, best_loss, best_epoch, history, stale = None, float("inf"), 0, [], 0
    for epoch in (bar := tqdm(range(epochs or cfg.fusion_epochs), desc="training fusion head", leave=False)):
        head.train()
        n = len(y_tr)
        order = torch.from_numpy(rng.permutation(n) if weights is None else rng.choice(n, n, p=weights))
        total = 0.0
        for start in range(0, n, cfg.fusion_batch):
            rows = order[start : start + cfg.fusion_batch]
            shown = p_tr[rows] * (torch.from_numpy(rng.random((len(rows), 1))) >= drop).float()
            loss = loss_fn(head.stack_logits(z_tr[rows], i_tr[rows], shown), y_tr[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        row = {"epoch": epoch + 1, "train_loss": total / n}
        if held is None:
            history.append(row)
            continue
        head.eval()
        with torch.no_grad():
            row["stop_loss"] = loss_fn(head.stack_logits(*held[:3]), held[3]).item()
        history.append(row)
        bar.set_postfix(train=f"{row['train_loss']:.4f}", stop=f"{row['stop_loss']:.4f}")
        if row["stop_loss"] < best_loss - 1e-5:
            best, best_loss, best_epoch, stale = (
                {k: v.clone() for k, v in head.state_dict().items()},
                row["stop_loss"],
                epoch + 1,
                0,
            )
        elif (stale := stale + 1) >= cfg.patience:
            break
    if best is not None:
        head.load_state_dict(best)
    return head.eval(), history, best_epoch or len(history)


def stack_probs(head: FusionHead, z, image, has_poster) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(head.stack_logits(*tensors(z, image, has_poster))).numpy()


def fold_head(cfg, z, image, has_poster, y, fold, k, **kw):
    """The head of dev fold k: trained on the other folds, early-stopping on a random stop_frac of
    them; never reads fold k's labels. Returns train_head's (head, history, best epoch)."""
    rest = np.random.default_rng([cfg.seed, k]).permutation(np.flatnonzero((fold >= 0) & (fold != k)))
    n_stop = int(round(cfg.stop_frac * len(rest)))
    return train_head(cfg, z, image, has_poster, y, rest[n_stop:], rest[:n_stop], **kw)


def cross_fit(cfg, z, image, has_poster, y, fold, **kw) -> tuple[dict, list, int]:
    """Out-of-fold probabilities of the head in both input modes, plus the epoch count for the final
    head (the median of the folds' early-stopping choices)."""
    oof = {m: np.full(y.shape, np.nan, np.float32) for m in ("plot", "plot+poster")}
    histories, best_epochs = [], []
    for k in range(fold.max() + 1):
        head, history, best_epoch = fold_head(cfg, z, image, has_poster, y, fold, k, **kw)
        held = fold == k
        oof["plot"][held] = stack_probs(head, z[held], image[held], np.zeros_like(has_poster[held]))
        oof["plot+poster"][held] = stack_probs(head, z[held], image[held], has_poster[held])
        histories.append(history)
        best_epochs.append(best_epoch)
    return oof, histories, int(np.median(best_epochs))


def run(cfg) -> cache.Output:
    curated, tuned, embedded = data.run(cfg), finetune.run(cfg), embed.run(cfg)
    parts = {"finetune": tuned.key, "embed": embedded.key, "config": cfg.subset(*KEYS), "code": CODE}

    def build(out: Path):
        movies, _, y = data.load(curated)
        image = embedded.posters_array()
        has_poster = (movies.poster != "").to_numpy(np.float32)[:, None]
        fold = movies.fold.to_numpy()
        dev = np.flatnonzero(fold >= 0)
        z = np.load(tuned / "oof_logits.npy")  # NaN on test rows, which no head trains on
        heads = {
            # name: (text logits seen in training, modality dropout)
            "head": (z, cfg.modality_dropout),
            "poster_head": (np.zeros_like(z), 0.0),
        }
        summary = {}
        for name, (zz, drop) in heads.items():
            oof, histories, epochs = cross_fit(cfg, zz, image, has_poster, y, fold, modality_dropout=drop)
            head, final_history, _ = train_head(
                cfg, zz, image, has_poster, y, dev, epochs=epochs, modality_dropout=drop
            )
            if name == "head":
                head.text_head = finetune.load_head(tuned)  # inference starts from the text embedding
            else:
                nn.init.zeros_(head.text_head.bias)  # poster only: no text, no text prior
            save(head, out, name)
            np.savez_compressed(out / f"{name}_oof.npz", **oof)
            summary[name] = {"folds": histories, "epochs": epochs, "final": final_history}
        (out / "history.json").write_text(json.dumps(summary, indent=1))

    return cache.cached(cfg, "train", parts, build)


def save(head: FusionHead, out: Path, name: str):
    torch.save(head.state_dict(), out / f"{name}.pt")
    dims = {
        "text_dim": head.text_head.in_features,
        "image_dim": head.image_mean.shape[0],
        "n_labels": head.text_head.out_features,
        "hidden": head.mlp[1].out_features,
    }
    (out / f"{name}.json").write_text(json.dumps(dims))


def load(out: cache.Output, name: str = "head") -> FusionHead:
    """The shipped fusion head ('head') or the poster-only head ('poster_head')."""
    dims = json.loads((out / f"{name}.json").read_text())
    head = FusionHead(dims["text_dim"], dims["image_dim"], dims["n_labels"], dims["hidden"], 0.0)
    head.load_state_dict(torch.load(out / f"{name}.pt"))
    return head.eval()


def load_oof(out: cache.Output, name: str = "head") -> dict:
    """Out-of-fold probabilities of a head, by input mode ('plot', 'plot+poster')."""
    with np.load(out / f"{name}_oof.npz") as f:
        return {m: f[m] for m in f.files}
