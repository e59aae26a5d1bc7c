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
from sklearn.metrics import average_precision_score
from torch import nn
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from . import cache, data, select_extra, text

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
def logits(model, encoded, lengths, rows, size=64) -> np.ndarray:
    """Logits of `rows`, in their order."""
    model.eval()
    out = np.zeros((len(encoded), model.head.out_features), np.float32)
    for b in batches(lengths, rows, size):
        out[b] = model(*text.pad([encoded[i] for i in b])).numpy()
    return out[rows]


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


def train(cfg, encoded, lengths, y, fit, held=None, epochs=None) -> tuple[TextClassifier, list[dict], np.ndarray]:
    """Fine-tune on rows `fit` for `epochs` (default cfg.epochs) of the cfg.epochs-long schedule.

    After each epoch the `held` rows are scored (reported only): returns (model, per-epoch history,
    held-out logits [epochs, len(held), G])."""
    epochs = cfg.epochs if epochs is None else epochs
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
    history, held_logits = [], []
    for epoch in range(epochs):
        model.train()
        total, parts = 0.0, batches(lengths, fit, cfg.batch, rng)
        for i, b in enumerate(bar := tqdm(parts, desc=f"fine-tuning epoch {epoch + 1}/{epochs}")):
            loss = loss_fn(model(*text.pad([encoded[j] for j in b])), target[b])
            (loss / cfg.accum).backward()
            if (i + 1) % cfg.accum == 0 or i + 1 == len(parts):
                opt.step()
                sched.step()
                opt.zero_grad()
            total += loss.item() * len(b)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        row = {"epoch": epoch + 1, "train_loss": total / len(fit)}
        if held is not None:
            held_logits.append(logits(model, encoded, lengths, held))
            row.update({f"held_{k}": v for k, v in held_out_scores(y[held], held_logits[-1]).items()})
        history.append(row)
        print(f"[finetune] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
    return model.eval(), history, np.array(held_logits, np.float32)


def encode_all(cfg, plots) -> tuple[list[list[int]], np.ndarray]:
    tok = text.load_tokenizer(cfg.text_backbone)
    encoded = [text.encode(tok, p, cfg.max_len) for p in plots]
    return encoded, np.array([len(e) for e in encoded])


def run(cfg) -> cache.Output:
    curated, selected = data.run(cfg), select_extra.run(cfg)
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
        rows = select_extra.load(selected)
        n = len(movies)
        # one table: the main rows first (scored, never trained on), then the chosen extra rows
        encoded, lengths = encode_all(cfg, movies.overview.tolist() + extra.overview.iloc[rows].tolist())
        targets = np.vstack([y, y_extra[rows]]).astype(np.float32)
        fit = np.arange(n, len(encoded))
        dev = np.flatnonzero(movies.fold.to_numpy() >= 0)
        model, history, _ = train(cfg, encoded, lengths, targets, fit, dev)
        save_file({k: v.contiguous() for k, v in model.encoder.state_dict().items()}, str(out / "encoder.safetensors"))
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(out / "head.safetensors"))
        np.save(out / "embeddings.npy", embeddings(model, encoded, lengths, np.arange(n)))
        (out / "history.json").write_text(json.dumps({"epochs": history, "extra_rows": len(fit)}, indent=1))

    return cache.cached(cfg, "finetune", parts, build)


@torch.no_grad()
def embeddings(model, encoded, lengths, rows, size=64) -> np.ndarray:
    """Mean-pooled encoder outputs of `rows`, in their order."""
    model.eval()
    out = np.zeros((len(encoded), model.encoder.dim), np.float32)
    for b in batches(lengths, rows, size):
        out[b] = model.encoder(*text.pad([encoded[i] for i in b])).numpy()
    return out[rows]


def load_head(out: cache.Output) -> nn.Linear:
    """The fine-tuned classifier's linear head (text embedding → genre logits)."""
    from safetensors.torch import load_file

    state = load_file(str(out / "head.safetensors"))
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return head.eval()
