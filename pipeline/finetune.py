"""Stage `finetune`: the text transformer fine-tuned end to end on the plots (the seed's recipe).

Flags as in the seed: --epochs --batch --accum --lr_head --lr_backbone --max_len --freeze_layers
--warmup_ratio. Bottom layers (and the embeddings) stay frozen; the rest learns at lr_backbone, a
linear head at lr_head; linear warm-up then decay; early stopping on validation micro-F1.
Saves the encoder (safetensors), the text-only probabilities of every movie, and per-epoch curves.
"""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from . import cache, data, text

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, text.__file__)

KEYS = ("text_backbone", "max_len", "epochs", "batch", "accum", "lr_head", "lr_backbone", "freeze_layers")


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
    """Batches of similar length (little padding); shuffled when rng is given."""
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


@torch.no_grad()
def predict(model, encoded, lengths, rows, size=64) -> np.ndarray:
    model.eval()
    out = np.zeros((len(encoded), model.head.out_features), np.float32)
    for b in batches(lengths, rows, size):
        out[b] = torch.sigmoid(model(*text.pad([encoded[i] for i in b]))).numpy()
    return out


def micro_f1(y, probs, threshold=0.5) -> float:
    pred = probs >= threshold
    tp = (pred * y).sum()
    return float(2 * tp / max(pred.sum() + y.sum(), 1))


def train(cfg, plots: list[str], y: np.ndarray, split: np.ndarray) -> tuple[TextClassifier, list[dict]]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tok = text.load_tokenizer(cfg.text_backbone)
    encoded = [text.encode(tok, p, cfg.max_len) for p in plots]
    lengths = np.array([len(e) for e in encoded])
    tr, va = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    model = TextClassifier(cfg.text_backbone, y.shape[1])
    freeze_bottom(model.encoder.backbone, cfg.freeze_layers)
    backbone = [p for p in model.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": backbone, "lr": cfg.lr_backbone}, {"params": model.head.parameters(), "lr": cfg.lr_head}],
        weight_decay=0.01,
    )
    steps = cfg.epochs * int(np.ceil(len(tr) / cfg.batch / cfg.accum))
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * steps), steps)
    loss_fn = nn.BCEWithLogitsLoss()
    target = torch.from_numpy(y)
    history, best, best_f1, stale = [], None, -1.0, 0
    for epoch in range(cfg.epochs):
        model.train()
        total, parts = 0.0, batches(lengths, tr, cfg.batch, rng)
        for i, b in enumerate(bar := tqdm(parts, desc=f"fine-tuning epoch {epoch + 1}/{cfg.epochs}")):
            loss = loss_fn(model(*text.pad([encoded[j] for j in b])), target[b])
            (loss / cfg.accum).backward()
            if (i + 1) % cfg.accum == 0 or i + 1 == len(parts):
                opt.step()
                sched.step()
                opt.zero_grad()
            total += loss.item() * len(b)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        probs = predict(model, encoded, lengths, va)[va]
        val_loss = float(loss_fn(torch.logit(torch.from_numpy(probs).clamp(1e-6, 1 - 1e-6)), target[va]))
        f1 = micro_f1(y[va], probs)
        history.append({"epoch": epoch + 1, "train_loss": total / len(tr), "val_loss": val_loss, "val_micro_f1": f1})
        print(
            f"[finetune] epoch {epoch + 1}: train loss {total / len(tr):.4f}, val loss {val_loss:.4f}, val micro-F1 {f1:.4f}"
        )
        if f1 > best_f1:
            best, best_f1, stale = {k: v.clone() for k, v in model.state_dict().items()}, f1, 0
        elif (stale := stale + 1) >= cfg.patience_text:
            break
    model.load_state_dict(best)
    model.probs = predict(model, encoded, lengths, np.arange(len(plots)))
    return model.eval(), history


def run(cfg) -> cache.Output:
    curated = data.run(cfg)
    parts = {
        "data": curated.key,
        "config": cfg.subset(*KEYS, "warmup_ratio", "patience_text", "seed"),
        "code": CODE,
    }

    def build(out: Path):
        torch.set_num_threads(cfg.threads)
        movies, _, y = data.load(curated)
        model, history = train(cfg, movies.overview.tolist(), y, movies.split.to_numpy())
        save_file({k: v.contiguous() for k, v in model.encoder.state_dict().items()}, str(out / "encoder.safetensors"))
        np.save(out / "probs.npy", model.probs)
        (out / "history.json").write_text(json.dumps(history, indent=1))

    return cache.cached(cfg, "finetune", parts, build)
