"""The text transformer with a linear genre head, and its fine-tuning loop (the course project's recipe as
flags; pipeline/stages/finetune.py says on which rows)."""

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import nn
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from pipeline.learn import text


class TextClassifier(nn.Module):
    def __init__(self, backbone: str, n_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = text.TextEncoder(backbone)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.dim, n_labels)

    def forward(self, ids, mask):
        return self.head(self.dropout(self.encoder(ids, mask)))


def freeze_bottom(model: nn.Module, n: int):
    """Freeze the embeddings and the first n transformer layers (BERT-style models)."""
    if n <= 0:
        return
    layers = model.encoder.layer
    for module in (model.embeddings, *layers[:n]):
        for p in module.parameters():
            p.requires_grad = False


def batches(lengths: np.ndarray, rows: np.ndarray, size: int, rng=None) -> list[np.ndarray]:
    """Batches of similar length (little padding); shuffled when rng is given. No rows, no batches."""
    if len(rows) == 0:
        return []
    if rng is not None:
        rows = rng.permutation(rows)
        chunks = [rows[i : i + size * 20] for i in range(0, len(rows), size * 20)]
        rows = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
    else:
        rows = rows[np.argsort(lengths[rows], kind="stable")]
    out = [rows[i : i + size] for i in range(0, len(rows), size)]
    if rng is not None:
        rng.shuffle(out)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def held_out_scores(y: np.ndarray, z: np.ndarray) -> dict:
    """Threshold-free quality of held-out logits: the epoch choice must not depend on thresholds."""
    p = sigmoid(z)
    loss = float(np.mean(np.logaddexp(0, z) - y * z))
    present = y.sum(0) > 0
    return {
        "loss": loss,
        "micro_ap": float(average_precision_score(y, p, average="micro")),
        "macro_ap": float(average_precision_score(y[:, present], p[:, present], average="macro")),
    }


def train(cfg, encoded, lengths, y, fit, embed_rows, held) -> tuple[TextClassifier, list[dict], np.ndarray]:
    """Fine-tune on rows `fit` for cfg.epochs. After each epoch the encoder embeds `embed_rows` and the head scores
    the `held` ones among them (positions in embed_rows; reported only), so the last epoch's pass is also the
    embeddings the caller keeps: returns (model, per-epoch history, embeddings of embed_rows)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = TextClassifier(cfg.text_backbone, y.shape[1])
    freeze_bottom(model.encoder.backbone, cfg.freeze_layers)
    backbone = [p for p in model.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": backbone, "lr": cfg.lr_backbone}, {"params": model.head.parameters(), "lr": cfg.lr_head}],
        weight_decay=0.01,
    )
    steps = cfg.epochs * int(np.ceil(len(fit) / cfg.batch / cfg.accum))
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), steps)
    loss_fn = nn.BCEWithLogitsLoss()
    target = torch.from_numpy(y)
    history, embedded = [], None
    for epoch in range(cfg.epochs):
        model.train()
        total, parts = 0.0, batches(lengths, fit, cfg.batch, rng)
        for i, b in enumerate(bar := tqdm(parts, desc=f"fine-tuning epoch {epoch + 1}/{cfg.epochs}")):
            loss = loss_fn(model(*text.pad([encoded[j] for j in b])), target[b])
            (loss / cfg.accum).backward()
            if (i + 1) % cfg.accum == 0 or i + 1 == len(parts):
                opt.step()
                sched.step()
                opt.zero_grad()
            total += loss.item() * len(b)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        row = {"epoch": epoch + 1, "train_loss": total / len(fit)}
        embedded = embeddings(model, encoded, lengths, embed_rows)
        with torch.no_grad():
            held_logits = model.head(torch.from_numpy(embedded[held])).numpy()
        row.update({f"held_{k}": v for k, v in held_out_scores(y[embed_rows][held], held_logits).items()})
        history.append(row)
        print(f"[finetune] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
    if embedded is None:  # --epochs 0: the pretrained encoder's embeddings
        embedded = embeddings(model, encoded, lengths, embed_rows)
    return model.eval(), history, embedded


@torch.no_grad()
def embeddings(model, encoded, lengths, rows, size=64) -> np.ndarray:
    """Mean-pooled encoder outputs of `rows`, in their order."""
    model.eval()
    out = np.zeros((len(encoded), model.encoder.dim), np.float32)
    for b in batches(lengths, rows, size):
        out[b] = model.encoder(*text.pad([encoded[i] for i in b])).numpy()
    return out[rows]
