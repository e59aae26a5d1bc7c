"""Stage `distil`: a web-sized student text encoder taught by the fine-tuned teacher, from plots alone.

No label is read. The student (pipeline/student_model.py, vocabulary pipeline/student_vocab.py) learns
from up to `student_plots` plots of the chosen extra rows, at random; never a plot of the main data, dev
or test, not even for its vocabulary. Its check against the teacher is CV on the dev folds: a student
taught on dev plots would be scored there on plots it learned to copy, and so look closer to the teacher
than on plots it never saw (as test's and every visitor's are). Loss: MSE to the teacher's genre logits (the teacher's head applied to
both embeddings: the heads see text through those logits) plus a cosine loss to the teacher's embedding.
The teacher's outputs on the plots are computed once; augmented views (`student_views`) need it again.

The teacher never saw a label of the main rows and the student saw none at all, so the student's
embeddings of every main row are honest features: `train` cross-fits the student's own heads on them,
and `evaluate` compares student and teacher by CV on the same folds (no check fold, no second student).

Output: student.safetensors + student.json (architecture), tokenizer.json (pruned), embeddings.npy
(every main row), calibration.json (token ids of dev plots: static scales and export checks),
history.json (losses, timings, sizes).
"""

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from . import augment, cache, data, finetune, select_extra, student_model, student_vocab, text

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, text.__file__, student_model.__file__, student_vocab.__file__, augment.__file__)

KEYS = ("student_layers", "student_rank", "student_vocab_top", "student_plots", "student_epochs", "student_views")
KEYS += ("student_lr", "student_batch", "student_cos_weight")


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
    for epoch in range(int(cfg.student_epochs)):
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
        parts = finetune.batches(lengths, np.arange(len(texts)), int(cfg.student_batch), rng)
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


def training_plots(cfg, extra, rows) -> tuple[list[str], dict]:
    """Plots of the chosen extra rows, at random, up to student_plots; never a main-data plot."""
    picked = np.random.default_rng(cfg.seed).permutation(rows)[: int(cfg.student_plots)]
    return extra.overview.iloc[picked].tolist(), {"extra": int(len(picked))}


def run(cfg) -> cache.Output:
    curated, selected, tuned = data.run(cfg), select_extra.run(cfg), finetune.run(cfg)
    parts = {
        "data": curated.key,
        "select": selected.key,
        "finetune": tuned.key,
        "config": cfg.subset("text_backbone", "max_len", "seed", *KEYS),
        "code": CODE,
    }

    def build(out: Path):
        torch.set_num_threads(cfg.threads)
        movies, _, _ = data.load(curated)
        extra, _ = data.load_extra(curated)
        plots, counts = training_plots(cfg, extra, select_extra.load(selected))
        base_json = json.loads(text.load_tokenizer(cfg.text_backbone).to_str())
        teacher_tok = text.load_tokenizer(cfg.text_backbone)
        teacher = text.TextEncoder(cfg.text_backbone, tuned / "encoder.safetensors").eval()
        head = finetune.load_head(tuned)
        start = time.perf_counter()
        student, tok_json, history = distil(cfg, teacher, head, teacher_tok, plots, base_json)
        record = {"plots": counts, "history": history, "seconds": time.perf_counter() - start}
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(out / "student.safetensors"))
        (out / "student.json").write_text(json.dumps(student.spec, indent=1))
        (out / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False))
        student_tok = student_vocab.load_tokenizer_json(tok_json)
        enc = [text.encode(student_tok, p, cfg.max_len) for p in movies.overview]
        np.save(out / "embeddings.npy", embed_rows(student, enc, np.array([len(e) for e in enc]), np.arange(len(enc))))
        dev = np.flatnonzero(movies.fold.to_numpy() >= 0)
        pick = np.random.default_rng(cfg.seed).choice(dev, min(256, len(dev)), replace=False)
        (out / "calibration.json").write_text(json.dumps([enc[i] for i in pick]))
        record["vocab"] = student.spec["vocab"]
        record["parameters"] = sum(p.numel() for p in student.parameters())
        (out / "history.json").write_text(json.dumps(record, indent=1))

    return cache.cached(cfg, "distil", parts, build)
