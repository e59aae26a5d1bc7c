"""Stage `finetune`: the text transformer fine-tuned end to end on the plots, cross-fitted.

Flags as in the seed: --epochs --batch --accum --lr_head --lr_backbone --max_len --freeze_layers
--warmup_ratio. Bottom layers (and the embeddings) stay frozen; the rest learns at lr_backbone, a
linear head at lr_head; linear warm-up then decay over --epochs.

Cross-fitting: for each of the K dev folds a model trains on the other folds and scores the held-out
fold after every epoch, so every dev row gets text logits from a model that never saw its labels
(the fusion head trains on those, not on the cleaner in-sample logits). The epoch count is chosen
on those held-out scores; the shipped model then trains on every dev row for that many epochs.
Test rows are never read here except to be scored by the final model.
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

    After each epoch the `held` rows are scored: returns (model, per-epoch history, held-out logits
    [epochs, len(held), G])."""
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


def choose_epochs(histories: list[list[dict]]) -> int:
    """The epoch count with the best mean held-out micro average precision over the folds."""
    mean_ap = np.mean([[h["held_micro_ap"] for h in fold] for fold in histories], axis=0)
    return int(np.argmax(mean_ap)) + 1


def prepare(cfg, curated: cache.Output):
    movies, _, y = data.load(curated)
    tok = text.load_tokenizer(cfg.text_backbone)
    encoded = [text.encode(tok, p, cfg.max_len) for p in movies.overview]
    return movies, y, encoded, np.array([len(e) for e in encoded])


def run_fold(cfg, curated: cache.Output, k: int) -> cache.Output:
    """One cross-fitting model: trained on the dev rows outside fold k, scoring fold k every epoch."""
    parts = {"data": curated.key, "config": cfg.subset(*KEYS, "warmup_ratio", "seed"), "fold": k, "code": CODE}

    def build(out: Path):
        torch.set_num_threads(cfg.threads)
        movies, y, encoded, lengths = prepare(cfg, curated)
        fold = movies.fold.to_numpy()
        fit, held = np.flatnonzero((fold >= 0) & (fold != k)), np.flatnonzero(fold == k)
        _, history, held_logits = train(cfg, encoded, lengths, y, fit, held)
        np.save(out / "rows.npy", held)
        np.save(out / "logits.npy", held_logits)
        (out / "history.json").write_text(json.dumps(history, indent=1))

    return cache.cached(cfg, f"finetune_fold{k}", parts, build)


def run(cfg) -> cache.Output:
    curated = data.run(cfg)
    folds = [run_fold(cfg, curated, k) for k in range(cfg.folds)]
    parts = {
        "data": curated.key,
        "folds": [f.key for f in folds],
        "config": cfg.subset(*KEYS, "warmup_ratio", "seed"),
        "code": CODE,
    }

    def build(out: Path):
        torch.set_num_threads(cfg.threads)
        movies, y, encoded, lengths = prepare(cfg, curated)
        histories = [json.loads((f / "history.json").read_text()) for f in folds]
        chosen = choose_epochs(histories)
        oof = np.full((len(y), y.shape[1]), np.nan, np.float32)
        for f in folds:
            oof[np.load(f / "rows.npy")] = np.load(f / "logits.npy")[chosen - 1]
        dev = np.flatnonzero(movies.split.to_numpy() == "dev")
        model, final_history, _ = train(cfg, encoded, lengths, y, dev, epochs=chosen)
        save_file({k: v.contiguous() for k, v in model.encoder.state_dict().items()}, str(out / "encoder.safetensors"))
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(out / "head.safetensors"))
        np.save(out / "oof_logits.npy", oof)
        np.save(out / "logits.npy", logits(model, encoded, lengths, np.arange(len(y))))  # the shipped model's
        np.save(out / "folds.npy", movies.fold.to_numpy())
        history = {"folds": histories, "chosen_epochs": chosen, "final": final_history}
        (out / "history.json").write_text(json.dumps(history, indent=1))

    return cache.cached(cfg, "finetune", parts, build)


def load_head(out: cache.Output) -> nn.Linear:
    """The fine-tuned classifier's linear head (text embedding → genre logits)."""
    from safetensors.torch import load_file

    state = load_file(str(out / "head.safetensors"))
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return head.eval()
