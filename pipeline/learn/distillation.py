"""Teaching the student encoder from the teacher's outputs on plots (no labels): logit MSE plus embedding
cosine (pipeline/stages/distil.py says on which plots)."""

import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.learn import augment, student_model, student_vocab, text, text_classifier


@torch.no_grad()
def embed_rows(model: nn.Module, encoded: list[list[int]], lengths: np.ndarray, rows, size: int = 64) -> np.ndarray:
    """Mean-pooled embeddings of `rows`, in their order (length-sorted batches inside)."""
    model.eval()
    rows = np.asarray(rows)
    out = np.zeros((len(rows), model.dim), np.float32)
    order = np.argsort(lengths[rows], kind="stable")
    for s in range(0, len(order), size):
        b = order[s : s + size]
        out[b] = model(*text.pad([encoded[rows[i]] for i in b])).numpy()
    return out


def distil(cfg, teacher, head: nn.Linear, teacher_tok, plots: list[str], base_json: dict, log=print):
    """A student trained to reproduce the teacher on `plots` (and augmented views of them).
    Returns (student, its tokenizer.json, per-epoch history)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_ids = [text.encode(teacher_tok, p, cfg.max_len) for p in plots]
    keep = student_vocab.kept_ids(base_json, {i for ids in t_ids for i in ids}, int(cfg.student_vocab_top))
    tok_json = student_vocab.pruned_tokenizer(base_json, keep)
    student_tok = student_vocab.load_tokenizer_json(tok_json)
    student = student_model.StudentEncoder(student_model.student_spec(cfg, teacher, len(keep)))
    student_model.init_from_teacher(student, teacher, keep)
    for p in list(teacher.parameters()) + list(head.parameters()):
        p.requires_grad = False
    start = time.perf_counter()
    targets = embed_rows(teacher, t_ids, np.array([len(e) for e in t_ids]), np.arange(len(plots)))
    log(f"[distil] teacher outputs on {len(plots)} plots: {time.perf_counter() - start:.0f} s")

    opt = torch.optim.AdamW(student.parameters(), lr=cfg.student_lr, weight_decay=0.01)
    views = int(cfg.student_views)
    steps = int(cfg.student_epochs) * int(np.ceil(len(plots) * (1 + views) / cfg.student_batch))
    from transformers import get_linear_schedule_with_warmup

    sched = get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    history = []
    # no plots (no extra rows): the student stays as initialised from the teacher's layers; its CV check decides
    for epoch in range(int(cfg.student_epochs) if plots else 0):
        start = time.perf_counter()
        texts, e_t = list(plots), [targets]
        for _ in range(views):
            others = rng.permutation(len(plots))
            new = [augment.augment(plots[r], rng, plots[o]) for r, o in enumerate(others)]
            ids = [text.encode(teacher_tok, x, cfg.max_len) for x in new]
            e_t.append(embed_rows(teacher, ids, np.array([len(e) for e in ids]), np.arange(len(new))))
            texts += new
        e_t = torch.from_numpy(np.concatenate(e_t))
        s_ids = [text.encode(student_tok, x, cfg.max_len) for x in texts]
        lengths = np.array([len(e) for e in s_ids])
        student.train()
        totals = {"logit_mse": 0.0, "cosine": 0.0}
        parts = text_classifier.batches(lengths, np.arange(len(texts)), int(cfg.student_batch), rng)
        for b in tqdm(parts, desc=f"distilling epoch {epoch + 1}/{cfg.student_epochs}"):
            target = e_t[torch.from_numpy(b)]
            e_s = student(*text.pad([s_ids[i] for i in b]))
            mse = nn.functional.mse_loss(head(e_s), head(target))
            cos = 1 - nn.functional.cosine_similarity(e_s, target).mean()
            loss = mse + cfg.student_cos_weight * cos
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            totals["logit_mse"] += mse.item() * len(b)
            totals["cosine"] += cos.item() * len(b)
        row = {"epoch": epoch + 1, **{k: v / len(texts) for k, v in totals.items()}}
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        log(f"[distil] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
    return student.eval(), tok_json, history
