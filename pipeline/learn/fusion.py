"""The heads on the text encoder: plot_head (text only), fusion (text + poster, modality dropout) and
poster_head (poster only), their training with early stopping, and cross-fitting over the dev folds
(pipeline/stages/train.py runs them and says why only the heads need cross-fitting)."""

import math

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

MODES = ("plot", "plot+poster")


# head name: (uses the text embedding, uses the poster); the modality dropout comes from the config
HEADS = {"plot_head": (True, False), "fusion": (True, True), "poster_head": (False, True)}


class FusionHead(nn.Module):
    def __init__(self, text_dim: int, image_dim: int, n_labels: int, hidden: int, dropout: float, use_image=True):
        super().__init__()
        self.text_head = nn.Linear(text_dim, n_labels)  # the encoder's genre head, copied in, frozen
        self.text_head.requires_grad_(False)
        self.use_image = use_image
        # standardisation of the inputs, fitted on the training rows and exported with the weights
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.register_buffer("text_std", torch.ones(text_dim))
        self.register_buffer("image_mean", torch.zeros(image_dim if use_image else 0))
        self.register_buffer("image_std", torch.ones(image_dim if use_image else 0))
        width = n_labels + text_dim + ((image_dim + 1) if use_image else 0)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout / 2),
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_labels),
        )

    @property
    def image_offset(self) -> int:
        """Where the poster's columns start in the MLP's input (poster_cam.py differentiates them)."""
        return self.text_head.out_features + self.text_head.in_features

    def mlp_input(self, z, text, image, has_poster):
        parts = [z, (text - self.text_mean) / self.text_std]
        if self.use_image:  # no poster: zero image input
            parts += [(image - self.image_mean) / self.image_std * has_poster, has_poster]
        return torch.cat(parts, dim=1)

    def logits(self, text, image, has_poster):
        """Genre logits from text embeddings [N, Dt], poster embeddings [N, Di], has_poster [N, 1]."""
        z = self.text_head(text)
        return z + self.mlp(self.mlp_input(z, text, image, has_poster))

    def forward(self, text, image, has_poster):
        return torch.sigmoid(self.logits(text, image, has_poster))

    def image_jacobian(self, text, image):
        """d logits / d image at has_poster = 1, per row: [N, G, Di] (zeros for a head without posters).

        logits = z + W2 gelu(W1 x + b1) + b2 with the poster's standardised columns at image_offset, so
        J = (W2 diag(gelu'(a))) W1[:, o:o+Di] / image_std, a = W1 x + b1. Grad-CAM of the final feature
        maps F (mean-pooled into `image`) weighs channel k for genre g by J_gk / (h w) (poster_cam.py)."""
        n, g = text.shape[0], self.text_head.out_features
        if not self.use_image:
            return image.new_zeros(n, g, image.shape[1])
        lin1, act, lin2 = self.mlp[1], self.mlp[2], self.mlp[4]
        z = self.text_head(text)
        a = lin1(self.mlp_input(z, text, image, torch.ones_like(z[:, :1])))  # [N, hidden]
        o = self.image_offset
        w_image = lin1.weight[:, o : o + image.shape[1]]  # [hidden, Di]
        return (lin2.weight[None] * gelu_grad(a, act.approximate)[:, None, :]) @ w_image / self.image_std

    def fit_scaling(self, text: np.ndarray, image: np.ndarray, has_poster: np.ndarray):
        # a floor: a feature (nearly) constant over the training rows must not blow up on a new one
        self.text_mean.copy_(torch.from_numpy(text.mean(0)))
        self.text_std.copy_(torch.from_numpy(np.maximum(text.std(0), 1e-2)))
        if self.use_image:
            seen = image[has_poster[:, 0] > 0] if has_poster.any() else image
            self.image_mean.copy_(torch.from_numpy(seen.mean(0)))
            self.image_std.copy_(torch.from_numpy(np.maximum(seen.std(0), 1e-2)))


def gelu_grad(a: torch.Tensor, approximate: str) -> torch.Tensor:
    """d gelu(a) / d a, exact (erf) or for the tanh approximation."""
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        u = torch.tanh(c * (a + 0.044715 * a**3))
        return 0.5 * (1 + u) + 0.5 * a * (1 - u * u) * c * (1 + 3 * 0.044715 * a * a)
    phi = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    return 0.5 * (1 + torch.erf(a / math.sqrt(2))) + a * phi


class ShippedHead(nn.Module):
    """The exported head: one graph for both input modes, each served by the head CV chose for it.
    probabilities = has_poster * sigmoid(poster_mode logits) + (1 - has_poster) * sigmoid(plot_mode logits);
    image_jacobian = the poster mode's d logits / d image [N, G, Di], for Grad-CAM of the visitor's poster."""

    def __init__(self, plot_mode: FusionHead, poster_mode: FusionHead):
        super().__init__()
        self.plot_mode, self.poster_mode = plot_mode, poster_mode

    def forward(self, text, image, has_poster):
        plot = torch.sigmoid(self.plot_mode.logits(text, image, torch.zeros_like(has_poster)))
        probs = has_poster * torch.sigmoid(self.poster_mode.logits(text, image, has_poster)) + (1 - has_poster) * plot
        return probs, self.poster_mode.image_jacobian(text, image)


def text_only(text_head: nn.Linear, image_dim: int) -> FusionHead:
    """The encoder alone (z), as a head whose correction is zero: the 'text_finetuned' candidate."""
    head = FusionHead(text_head.in_features, image_dim, text_head.out_features, 1, 0.0, use_image=False)
    head.text_head.load_state_dict(text_head.state_dict())
    for p in head.mlp.parameters():
        nn.init.zeros_(p)
    return head.eval()


def tensors(*arrays):
    return [torch.from_numpy(np.ascontiguousarray(a)).float() for a in arrays]


def balance_weights(y: np.ndarray, strength: float) -> np.ndarray:
    """Sampling weights that move genre frequencies toward uniform (the seed's balancing):
    each movie weighs the mean of 1/count over its genres, to the power `strength` (0 = off)."""
    inverse = 1.0 / np.maximum(y.sum(0), 1)
    per_movie = (y * inverse).sum(1) / np.maximum(y.sum(1), 1)
    w = per_movie**strength
    return w / w.sum()


def train_head(cfg, text_head, e, image, has_poster, y, fit, stop=None, epochs=None, use_image=True, drop=0.0):
    """Train a head's MLP on rows `fit` (text embeddings e, posters, labels).

    With `stop` rows: early stopping on their loss (patience cfg.patience). Without: exactly
    `epochs` epochs. Returns (head, history, epochs run until the best state)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = FusionHead(e.shape[1], image.shape[1], y.shape[1], cfg.fusion_hidden, cfg.fusion_dropout, use_image)
    head.text_head.load_state_dict(text_head.state_dict())
    head.fit_scaling(e[fit], image[fit], has_poster[fit])
    opt = torch.optim.AdamW(head.mlp.parameters(), lr=cfg.fusion_lr, weight_decay=cfg.fusion_weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    e_tr, i_tr, p_tr, y_tr = tensors(e[fit], image[fit], has_poster[fit], y[fit])
    weights = balance_weights(y[fit], cfg.balance) if cfg.balance > 0 else None
    held = tensors(e[stop], image[stop], has_poster[stop], y[stop]) if stop is not None else None
    best, best_loss, best_epoch, history, stale = None, float("inf"), 0, [], 0
    for epoch in (bar := tqdm(range(epochs or cfg.fusion_epochs), desc="training a head", leave=False)):
        head.train()
        n = len(y_tr)
        order = torch.from_numpy(rng.permutation(n) if weights is None else rng.choice(n, n, p=weights))
        total = 0.0
        for start in range(0, n, cfg.fusion_batch):
            rows = order[start : start + cfg.fusion_batch]
            shown = p_tr[rows] * (torch.from_numpy(rng.random((len(rows), 1))) >= drop).float()
            loss = loss_fn(head.logits(e_tr[rows], i_tr[rows], shown), y_tr[rows])
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
            row["stop_loss"] = loss_fn(head.logits(*held[:3]), held[3]).item()
        history.append(row)
        bar.set_postfix(train=f"{row['train_loss']:.4f}", stop=f"{row['stop_loss']:.4f}")
        if row["stop_loss"] < best_loss - 1e-5:
            best_loss, best_epoch, stale = row["stop_loss"], epoch + 1, 0
            best = {k: v.clone() for k, v in head.state_dict().items()}
        elif (stale := stale + 1) >= cfg.patience:
            break
    if best is not None:
        head.load_state_dict(best)
    return head.eval(), history, best_epoch or len(history)


def probs_of(head: FusionHead, e, image, has_poster) -> np.ndarray:
    with torch.no_grad():
        return head(*tensors(e, image, has_poster)).numpy()


def mode_probs(head: FusionHead, e, image, has_poster, rows) -> dict:
    """Probabilities of `rows` in each input mode (plot only: the poster hidden)."""
    shown = {"plot": np.zeros_like(has_poster[rows]), "plot+poster": has_poster[rows]}
    return {m: probs_of(head, e[rows], image[rows], shown[m]) for m in MODES}


def fold_head(cfg, text_head, e, image, has_poster, y, fold, k, trainable=None, movie=None, **kw):
    """The head of dev fold k: trained on the other folds' trainable rows, early-stopping on the rows of a
    random stop_frac of their movies (a movie's texts all on one side); never reads fold k's labels.
    Returns train_head's (head, history, best epoch)."""
    trainable = np.ones(len(y), bool) if trainable is None else trainable
    movie = np.arange(len(y)) if movie is None else movie
    rest = np.flatnonzero((fold >= 0) & (fold != k) & trainable)
    order = np.random.default_rng([cfg.seed, k]).permutation(np.unique(movie[rest]))
    place = np.empty(movie.max() + 1, np.int64)
    place[order] = np.arange(len(order))
    rest = rest[np.lexsort((rest, place[movie[rest]]))]  # the movies' random order, a movie's rows together
    n_stop = int(round(cfg.stop_frac * len(order)))
    stop = place[movie[rest]] < n_stop
    return train_head(cfg, text_head, e, image, has_poster, y, rest[~stop], rest[stop], **kw)


def cross_fit(cfg, text_head, e, image, has_poster, y, fold, trainable=None, movie=None, **kw) -> tuple:
    """Per mode, probabilities for every row: out of fold on dev rows (fold k's rows by fold k's head), from
    the head trained on every trainable dev row (for the median of the folds' early-stopping epochs) on the
    rows of fold -1 (the test split, and texts tied to no main-set movie). Only `trainable` rows (default:
    all) train; `movie`: the movie each row describes (default: its own), kept on one side of early stopping.
    Returns (probabilities, record of the training, final head)."""
    trainable = np.ones(len(y), bool) if trainable is None else trainable
    probs = {m: np.full(y.shape, np.nan, np.float32) for m in MODES}
    histories, best_epochs = [], []
    for k in range(fold.max() + 1):
        head, history, best_epoch = fold_head(cfg, text_head, e, image, has_poster, y, fold, k, trainable, movie, **kw)
        for m, p in mode_probs(head, e, image, has_poster, fold == k).items():
            probs[m][fold == k] = p
        histories.append(history)
        best_epochs.append(best_epoch)
    epochs = int(np.median(best_epochs))
    dev, test = np.flatnonzero((fold >= 0) & trainable), fold == -1
    head, final, _ = train_head(cfg, text_head, e, image, has_poster, y, dev, epochs=epochs, **kw)
    for m, p in mode_probs(head, e, image, has_poster, test).items():
        probs[m][test] = p
    return probs, {"folds": histories, "epochs": epochs, "final": final}, head
