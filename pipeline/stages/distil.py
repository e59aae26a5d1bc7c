"""Stage `distil`: a web-sized student text encoder taught by the fine-tuned teacher, from plots alone.

No label is read. The student (pipeline/learn/student_model.py, vocabulary pipeline/learn/student_vocab.py) learns
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
(every main row), history.json (losses, timings, sizes).
"""

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from pipeline import cache
from pipeline.learn import augment, distillation, student_model, student_vocab, text
from pipeline.learn.distillation import distil, embed_rows
from pipeline.stages import data, finetune, select

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(
    __file__, text.__file__, student_model.__file__, student_vocab.__file__, augment.__file__, distillation.__file__
)


KEYS = ("student_layers", "student_rank", "student_vocab_top", "student_plots", "student_epochs", "student_views")


KEYS += ("student_lr", "student_batch", "student_cos_weight")


def training_plots(cfg, extra, rows) -> tuple[list[str], dict]:
    """Plots of the chosen extra rows, at random, up to student_plots; never a main-data plot."""
    picked = np.random.default_rng(cfg.seed).permutation(rows)[: int(cfg.student_plots)]
    return extra.overview.iloc[picked].tolist(), {"extra": int(len(picked))}


def run(cfg) -> cache.Output:
    curated, selected, tuned = data.run(cfg), select.run(cfg), finetune.run(cfg)
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
        plots, counts = training_plots(cfg, extra, select.load(selected))
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
        record["vocab"] = student.spec["vocab"]
        record["parameters"] = sum(p.numel() for p in student.parameters())
        (out / "history.json").write_text(json.dumps(record, indent=1))

    return cache.cached(cfg, "distil", parts, build)
