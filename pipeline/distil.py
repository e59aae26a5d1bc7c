"""Stage `distil`: a web-sized student text encoder distilled from the fine-tuned teacher.

The student keeps `student_layers` of the teacher's transformer layers (initialised from them), a
vocabulary pruned to the wordpieces the dev plots use plus every single character and "##"
character (so any word still splits into pieces, never all [UNK]), and a low-rank word-embedding
table (V x rank, then rank x hidden; initialised by SVD of the teacher's rows). It is trained to
reproduce the teacher on dev plots and on augmented views of them (sentences dropped, shuffled,
mixed with another plot's, words dropped): MSE to the teacher's genre logits (the teacher's linear
head applied to both embeddings; the fusion head sees the text only through those logits) plus a
cosine loss to the teacher's mean-pooled embedding. No labels are read.

Rows: test plots are never read (not even for the vocabulary). The "check" student trains on the
dev rows outside one fold (`distil_check_fold`; the 'val' split with the old train/val/test
layout) and scores that fold, so it can be compared with the teacher's out-of-fold logits on rows
neither model learned from (`student_passes`). Its teacher is the cross-fitting model of that fold
when finetune saved it (check_teacher: an honest gap), and the shipped student is then distilled
again from the final teacher on every dev row. Without the fold model the check student learns from
the final teacher (a check that favours the student, see check_teacher) and is itself shipped
unless `distil_refit`.

Output folder: student.safetensors + student.json (the architecture), tokenizer.json (pruned),
logits.npy / embeddings.npy (shipped student, every curated row, for evaluate), check_rows.npy +
check_logits.npy (held-out student), calibration.json (dev plots' token ids, for static quantization),
history.json (losses, timings, sizes).
"""

import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn
from tqdm import tqdm

from . import cache, data, finetune, quantize, text

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, text.__file__)

# config keys this stage reads, with the defaults used when config.toml does not name them
DEFAULTS = {
    "student_layers": "1,3,5",  # teacher layers the student keeps (0-based), initialised from them
    "student_rank": 128,  # word-embedding rank (0: a full V x hidden table)
    "student_vocab_top": 5000,  # also keep the teacher vocabulary's first N (most frequent) word pieces
    "student_epochs": 3,
    "student_views": 1,  # augmented views per plot per epoch, besides the plot itself
    "student_lr": 2e-4,
    "student_batch": 32,
    "student_cos_weight": 1.0,  # weight of the embedding cosine loss beside the logit MSE
    "student_quantization": "dynamic",  # quantize.quantize_text mode: dynamic | static | fp16
    "distil_check": True,  # also train the held-out-fold student that `student_passes` compares
    "distil_check_fold": 0,
    "distil_refit": False,  # after the check, distil again on every dev row (twice the cost) and ship that
}
KEYS = tuple(DEFAULTS)
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FIRST_WORD = 1996  # in BERT's uncased vocabulary, ids from here are word pieces, roughly by frequency


def setting(cfg, key: str):
    return cfg.get(key, DEFAULTS[key])


def settings(cfg) -> dict:
    return {k: setting(cfg, k) for k in KEYS}


# ---------------------------------------------------------------------------------------------
# vocabulary


def kept_ids(tokenizer_json: dict, used: set[int], top: int = 0) -> list[int]:
    """Teacher token ids the student keeps, ascending: special tokens, every single character and
    "##" + character, the ids the training plots use, and the first `top` word pieces."""
    vocab = tokenizer_json["model"]["vocab"]
    keep = {vocab[t] for t in SPECIAL if t in vocab}
    keep |= {i for t, i in vocab.items() if len(t.removeprefix("##")) == 1}
    keep |= set(used)
    keep |= set(range(FIRST_WORD, min(FIRST_WORD + top, len(vocab))))
    return sorted(keep)


def pruned_tokenizer(tokenizer_json: dict, keep: list[int]) -> dict:
    """The teacher's tokenizer.json with only the `keep` ids, renumbered 0..len(keep)-1 in the same
    order (so [PAD] stays 0); special-token ids in added_tokens and the post-processor follow.
    Padding and truncation are off, as in text.tokenizer_json."""
    old = {i: t for t, i in tokenizer_json["model"]["vocab"].items()}
    new_id = {o: n for n, o in enumerate(keep)}
    out = json.loads(json.dumps(tokenizer_json))
    out["model"]["vocab"] = {old[o]: n for o, n in new_id.items()}
    out["added_tokens"] = [{**a, "id": new_id[a["id"]]} for a in out["added_tokens"] if a["id"] in new_id]
    post = out.get("post_processor") or {}
    for spec in post.get("special_tokens", {}).values():
        spec["ids"] = [new_id[i] for i in spec["ids"]]
    out["padding"], out["truncation"] = None, None
    return out


def load_tokenizer_json(tokenizer_json: dict) -> Tokenizer:
    tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    tok.no_padding()
    tok.no_truncation()
    return tok


# ---------------------------------------------------------------------------------------------
# the student


class LowRankEmbedding(nn.Module):
    """A V x hidden embedding table stored as V x rank codes times a rank x hidden projection."""

    def __init__(self, vocab: int, rank: int, hidden: int):
        super().__init__()
        self.codes = nn.Embedding(vocab, rank)
        self.proj = nn.Linear(rank, hidden, bias=False)

    def forward(self, ids):
        return self.proj(self.codes(ids))


class StudentEncoder(nn.Module):
    """A BERT with `spec["layers"]` layers, `spec["vocab"]` tokens and, when spec["rank"] > 0, a
    low-rank word table; mean pooling over the real tokens, as text.TextEncoder."""

    def __init__(self, spec: dict):
        super().__init__()
        from transformers import BertConfig, BertModel

        conf = BertConfig(
            **{
                **spec["bert"],
                "num_hidden_layers": len(spec["layers"]),
                "vocab_size": spec["vocab"],
                "max_position_embeddings": spec["max_len"],
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            }
        )
        self.spec = spec
        self.backbone = BertModel(conf, add_pooling_layer=False)
        self.dim = conf.hidden_size
        if spec["rank"]:
            self.backbone.embeddings.word_embeddings = LowRankEmbedding(spec["vocab"], spec["rank"], self.dim)

    forward = text.TextEncoder.forward


def student_spec(cfg, teacher: text.TextEncoder, vocab: int) -> dict:
    layers = [int(x) for x in str(setting(cfg, "student_layers")).split(",") if x.strip()]
    bert = teacher.backbone.config.to_dict()
    keep = ("hidden_size", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps")
    keep += ("type_vocab_size", "pad_token_id")
    return {
        "layers": layers,
        "vocab": vocab,
        "rank": int(setting(cfg, "student_rank")),
        "max_len": int(cfg.max_len),
        "bert": {k: bert[k] for k in keep},
    }


@torch.no_grad()
def init_from_teacher(student: StudentEncoder, teacher: text.TextEncoder, keep: list[int]):
    """Layers copied from the teacher's chosen layers; word rows of the kept ids (by SVD when
    low-rank); positions cut to max_len; token types and the embedding LayerNorm copied."""
    t, s = teacher.backbone, student.backbone
    for i, j in enumerate(student.spec["layers"]):
        s.encoder.layer[i].load_state_dict(t.encoder.layer[j].state_dict())
    rows = t.embeddings.word_embeddings.weight[torch.tensor(keep)].float()
    if student.spec["rank"]:
        u, sv, vt = torch.linalg.svd(rows, full_matrices=False)
        r = student.spec["rank"]
        s.embeddings.word_embeddings.codes.weight.copy_(u[:, :r] * sv[:r])
        s.embeddings.word_embeddings.proj.weight.copy_(vt[:r].T)
    else:
        s.embeddings.word_embeddings.weight.copy_(rows)
    s.embeddings.position_embeddings.weight.copy_(t.embeddings.position_embeddings.weight[: student.spec["max_len"]])
    s.embeddings.token_type_embeddings.load_state_dict(t.embeddings.token_type_embeddings.state_dict())
    s.embeddings.LayerNorm.load_state_dict(t.embeddings.LayerNorm.state_dict())


def load_student(out: cache.Output | Path) -> tuple[StudentEncoder, Tokenizer]:
    """The distilled student (eval mode) and its tokenizer, from a `distil` output folder."""
    folder = Path(out.path if isinstance(out, cache.Output) else out)
    spec = json.loads((folder / "student.json").read_text())
    model = StudentEncoder(spec)
    model.load_state_dict(load_file(str(folder / "student.safetensors")))
    return model.eval(), load_tokenizer_json(json.loads((folder / "tokenizer.json").read_text()))


# ---------------------------------------------------------------------------------------------
# the teacher


def teacher_head(tuned: cache.Output, teacher: text.TextEncoder, encoded, lengths) -> nn.Linear:
    """The teacher's linear head: head.safetensors when the finetune stage saved it; otherwise
    (older layout) recovered exactly by least squares from its saved probabilities, which are
    sigmoid(head(embedding)) for every row."""
    if (tuned / "head.safetensors").exists():
        state = load_file(str(tuned / "head.safetensors"))
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        head.load_state_dict(state)
        return head.eval()
    probs = np.load(tuned / "probs.npy").astype(np.float64).clip(1e-7, 1 - 1e-7)
    emb = embed_rows(teacher, encoded, lengths, np.arange(len(encoded)))
    x = np.hstack([emb, np.ones((len(emb), 1))])
    w, *_ = np.linalg.lstsq(x, np.log(probs / (1 - probs)), rcond=None)
    head = nn.Linear(emb.shape[1], probs.shape[1])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w[:-1].T).float())
        head.bias.copy_(torch.from_numpy(w[-1]).float())
    return head.eval()


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


# ---------------------------------------------------------------------------------------------
# augmentation

SENTENCE = re.compile(r"[^.!?]+[.!?]*\s*")  # as predict.sentences and demo.js


def augment(plot: str, rng: np.random.Generator, other: str) -> str:
    """A new text near `plot`, for more distillation signal from few plots: sentences dropped,
    shuffled, or mixed with another plot's; or 15 % of the words dropped."""
    parts = SENTENCE.findall(plot) or [plot]
    mode = rng.integers(4)
    if mode == 0 and len(parts) > 1:
        keep = [p for p in parts if rng.random() >= 0.35] or [parts[rng.integers(len(parts))]]
        return "".join(keep).strip()
    if mode == 1 and len(parts) > 1:
        return "".join(parts[i] for i in rng.permutation(len(parts))).strip()
    if mode == 2:
        theirs = SENTENCE.findall(other) or [other]
        mine = parts[: max(1, len(parts) // 2 + rng.integers(0, 2))]
        return ("".join(mine).strip() + " " + "".join(theirs[: max(1, len(theirs) // 2)]).strip()).strip()
    words = plot.split()
    kept = [w for w in words if rng.random() >= 0.15] or words
    return " ".join(kept)


# ---------------------------------------------------------------------------------------------
# training


def distil(
    cfg,
    teacher: text.TextEncoder,
    head: nn.Linear,
    teacher_tok: Tokenizer,
    plots: list[str],
    fit: np.ndarray,
    base_json: dict,
    held: np.ndarray | None = None,
    y: np.ndarray | None = None,
    log=print,
) -> tuple[StudentEncoder, dict, list[dict]]:
    """A student trained to reproduce the teacher on the `fit` plots and augmented views of them.
    After each epoch the `held` rows (if any) are scored: logit MSE to the teacher there and, with
    labels `y`, the student's threshold-free micro/macro average precision.
    Returns (student, its tokenizer.json, per-epoch history)."""
    s = settings(cfg)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    used = {i for r in fit for i in text.encode(teacher_tok, plots[r], cfg.max_len)}
    keep = kept_ids(base_json, used, int(s["student_vocab_top"]))
    tok_json = pruned_tokenizer(base_json, keep)
    student_tok = load_tokenizer_json(tok_json)
    student = StudentEncoder(student_spec(cfg, teacher, len(keep)))
    init_from_teacher(student, teacher, keep)
    for p in list(teacher.parameters()) + list(head.parameters()):
        p.requires_grad = False
    teacher.eval()

    opt = torch.optim.AdamW(student.parameters(), lr=s["student_lr"], weight_decay=0.01)
    per_epoch = len(fit) * (1 + int(s["student_views"]))
    steps = int(s["student_epochs"]) * int(np.ceil(per_epoch / s["student_batch"]))
    from transformers import get_linear_schedule_with_warmup

    sched = get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    history, teacher_held = [], None
    for epoch in range(int(s["student_epochs"])):
        start = time.perf_counter()
        texts = [plots[r] for r in fit]
        for _ in range(int(s["student_views"])):
            others = rng.permutation(fit)
            texts += [augment(plots[r], rng, plots[o]) for r, o in zip(fit, others)]
        t_ids = [text.encode(teacher_tok, x, cfg.max_len) for x in texts]
        s_ids = [text.encode(student_tok, x, cfg.max_len) for x in texts]
        lengths = np.array([len(e) for e in t_ids])
        student.train()
        totals = {"logit_mse": 0.0, "cosine": 0.0}
        parts = finetune.batches(lengths, np.arange(len(texts)), int(s["student_batch"]), rng)
        for b in tqdm(parts, desc=f"distilling epoch {epoch + 1}/{s['student_epochs']}"):
            with torch.no_grad():
                e_t = teacher(*text.pad([t_ids[i] for i in b]))
                z_t = head(e_t)
            e_s = student(*text.pad([s_ids[i] for i in b]))
            mse = nn.functional.mse_loss(head(e_s), z_t)
            cos = 1 - nn.functional.cosine_similarity(e_s, e_t).mean()
            loss = mse + s["student_cos_weight"] * cos
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            totals["logit_mse"] += mse.item() * len(b)
            totals["cosine"] += cos.item() * len(b)
        row = {"epoch": epoch + 1, **{k: v / len(texts) for k, v in totals.items()}}
        row["seconds"] = time.perf_counter() - start
        if held is not None and len(held):
            _, z = student_logits(student, head, student_tok, plots, cfg.max_len, held)
            if teacher_held is None:
                teacher_held = teacher_logits(teacher, head, teacher_tok, plots, cfg.max_len, held)
            row["held_logit_mse"] = float(np.mean((z - teacher_held) ** 2))
            if y is not None:
                row.update({f"held_{k}": v for k, v in average_precision(y[held], z).items()})
        history.append(row)
        log(f"[distil] epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
    return student.eval(), tok_json, history


def teacher_logits(teacher, head, teacher_tok, plots, max_len, rows) -> np.ndarray:
    enc = [text.encode(teacher_tok, p, max_len) for p in plots]
    emb = embed_rows(teacher, enc, np.array([len(e) for e in enc]), rows)
    with torch.no_grad():
        return head(torch.from_numpy(emb)).numpy()


def average_precision(y: np.ndarray, z: np.ndarray) -> dict:
    """Threshold-free quality of logits z against labels y: micro and macro average precision."""
    from sklearn.metrics import average_precision_score

    present = y.sum(0) > 0
    return {
        "micro_ap": float(average_precision_score(y, z, average="micro")),
        "macro_ap": float(average_precision_score(y[:, present], z[:, present], average="macro")),
    }


def check_teacher(cfg, curated: cache.Output, movies) -> tuple[text.TextEncoder, nn.Linear] | None:
    """The cross-fitting model of the check fold (trained without it), when finetune's fold stage
    saved its encoder.safetensors and head.safetensors; else None.

    Distilling the check student from this model makes the check honest: teacher (its out-of-fold
    logits) and student both never saw the check fold. Distilling it from the final teacher instead
    compares a student of a teacher trained on all dev rows (check fold included) with an
    out-of-fold model trained on (K-1)/K of them, which favours the student: measured, it passed the
    check by +1.6 micro / +2.6 macro points (plot only) yet trailed the teacher on test by 1.6 / 2.4."""
    if "fold" not in movies.columns or not hasattr(finetune, "run_fold"):
        return None
    folder = finetune.run_fold(cfg, curated, int(setting(cfg, "distil_check_fold")))
    if not ((folder / "encoder.safetensors").exists() and (folder / "head.safetensors").exists()):
        return None
    model = text.TextEncoder(cfg.text_backbone, folder / "encoder.safetensors").eval()
    state = load_file(str(folder / "head.safetensors"))
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    return model, head.eval()


def dev_rows(movies) -> np.ndarray:
    return np.flatnonzero(movies.split.to_numpy() != "test")


def check_rows(movies, fold: int) -> np.ndarray:
    """Held-out rows for the check student: fold `fold` of the dev rows (new layout), else 'val'."""
    if "fold" in movies.columns:
        return np.flatnonzero((movies.fold.to_numpy() == fold) & (movies.split.to_numpy() != "test"))
    return np.flatnonzero(movies.split.to_numpy() == "val")


def student_logits(student, head, student_tok, plots, max_len, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, logits) of the student on `rows` of `plots` (all rows by default)."""
    rows = np.arange(len(plots)) if rows is None else np.asarray(rows)
    enc = [text.encode(student_tok, p, max_len) for p in plots]
    emb = embed_rows(student, enc, np.array([len(e) for e in enc]), rows)
    with torch.no_grad():
        return emb, head(torch.from_numpy(emb)).numpy()


def run(cfg) -> cache.Output:
    curated, tuned = data.run(cfg), finetune.run(cfg)
    parts = {
        "data": curated.key,
        "finetune": tuned.key,
        "config": {**cfg.subset("text_backbone", "max_len", "seed"), **settings(cfg)},
        "code": CODE,
    }

    def build(out: Path):
        torch.set_num_threads(cfg.threads)
        movies, _, y = data.load(curated)
        plots = movies.overview.tolist()
        base_json = json.loads(text.load_tokenizer(cfg.text_backbone).to_str())
        teacher_tok = text.load_tokenizer(cfg.text_backbone)
        teacher = text.TextEncoder(cfg.text_backbone, tuned / "encoder.safetensors").eval()
        enc = [text.encode(teacher_tok, p, cfg.max_len) for p in plots]
        head = teacher_head(tuned, teacher, enc, np.array([len(e) for e in enc]))
        record = {"settings": settings(cfg)}
        dev = dev_rows(movies)
        fold_teacher = check_teacher(cfg, curated, movies) if setting(cfg, "distil_check") else None
        if setting(cfg, "distil_check"):
            held = check_rows(movies, int(setting(cfg, "distil_check_fold")))
            start = time.perf_counter()
            t_model, t_head = fold_teacher or (teacher, head)
            check, check_json, record["check_history"] = distil(
                cfg, t_model, t_head, teacher_tok, plots, np.setdiff1d(dev, held), base_json, held, y
            )
            _, z = student_logits(check, t_head, load_tokenizer_json(check_json), plots, cfg.max_len, held)
            np.save(out / "check_rows.npy", held)
            np.save(out / "check_logits.npy", z)
            record["check_teacher"] = (
                "the fold model that never saw the check fold: an honest student-vs-teacher gap"
                if fold_teacher
                else "the final teacher, which saw the check fold's labels and trained on more rows than the "
                "out-of-fold model it is compared with: the check favours the student"
            )
            record["check_honest"] = fold_teacher is not None
            record["check_student"] = average_precision(y[held], z)
            if (tuned / "oof_logits.npy").exists():  # the teacher, out of fold, on the same rows
                record["check_teacher_oof"] = average_precision(y[held], np.load(tuned / "oof_logits.npy")[held])
            record["check_seconds"] = time.perf_counter() - start
        if setting(cfg, "distil_check") and not setting(cfg, "distil_refit") and fold_teacher is None:
            # the shipped student is the one just checked on rows it never saw
            student, tok_json, record["history"] = check, check_json, record["check_history"]
            record["shipped"] = "the check student (dev rows outside the check fold)"
        else:  # a student of the final teacher on every dev row
            start = time.perf_counter()
            student, tok_json, record["history"] = distil(cfg, teacher, head, teacher_tok, plots, dev, base_json)
            record["seconds"] = time.perf_counter() - start
            record["shipped"] = "a student distilled on every dev row"
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(out / "student.safetensors"))
        (out / "student.json").write_text(json.dumps(student.spec, indent=1))
        (out / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False))
        emb, z = student_logits(student, head, load_tokenizer_json(tok_json), plots, cfg.max_len)
        np.save(out / "embeddings.npy", emb)
        np.save(out / "logits.npy", z)
        # token ids of dev plots in the student's vocabulary: calibration for static quantization
        rng = np.random.default_rng(cfg.seed)
        student_tok = load_tokenizer_json(tok_json)
        calib = [text.encode(student_tok, plots[i], cfg.max_len) for i in rng.choice(dev, min(128, len(dev)), False)]
        (out / "calibration.json").write_text(json.dumps(calib))
        record["vocab"] = student.spec["vocab"]
        record["parameters"] = sum(p.numel() for p in student.parameters())
        (out / "history.json").write_text(json.dumps(record, indent=1))

    return cache.cached(cfg, "distil", parts, build)


# ---------------------------------------------------------------------------------------------
# export

STUDENT_FILES = ("student_text_encoder.onnx", "student_tokenizer.json")


def export_student(cfg, student_out: cache.Output, out_dir: Path, mode: str | None = None) -> dict:
    """Write student_text_encoder.onnx and student_tokenizer.json to `out_dir`; return the
    manifest entry (the "text_encoder" shape; see CONTRACT.md). `mode` (default config
    student_quantization) is a quantize.quantize_text mode. Also writes student_check.json to
    out_dir: ONNX fp32 vs torch max difference, quantized vs fp32 cosine on held-back dev plots,
    batched-vs-single difference, native one-thread latency, operators."""
    mode = mode or setting(cfg, "student_quantization")
    out_dir = Path(out_dir)
    student, tok = load_student(student_out)
    calib = json.loads((student_out / "calibration.json").read_text())
    fit_ids, check_ids = calib[: len(calib) // 2], calib[len(calib) // 2 :]
    onnx_path = out_dir / STUDENT_FILES[0]
    ids = torch.tensor([check_ids[0]])
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "student_fp32.onnx"
        axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
        axes["embedding"] = {0: "batch"}
        quantize.export_onnx(
            student, (ids, torch.ones_like(ids)), fp32, ["input_ids", "attention_mask"], "embedding", axes
        )
        feeds = quantize.text_feeds(check_ids)
        with torch.no_grad():
            ref = np.concatenate([student(*text.pad([r])).numpy() for r in check_ids])
        parity = float(np.abs(quantize.outputs(fp32, feeds) - ref).max())
        info = quantize.quantize_text(fp32, onnx_path, mode, quantize.text_feeds(fit_ids))
        cos = quantize.embedding_cosine(fp32, onnx_path, feeds)
        fp32_ms = quantize.native_ms(fp32, feeds[:32])
    (out_dir / STUDENT_FILES[1]).write_text((student_out / "tokenizer.json").read_text())
    check = {
        **info,
        "onnx_fp32_vs_torch_max_abs": parity,
        "cosine_to_fp32": cos,
        "batched_vs_single_max_abs": quantize.batch_matches(onnx_path, check_ids[:16]),
        "native_ms_one_thread": quantize.native_ms(onnx_path, feeds[:32]),
        "native_ms_one_thread_fp32": fp32_ms,
        "median_tokens": float(np.median([len(r) for r in check_ids[:32]])),
        "bytes": {f: (out_dir / f).stat().st_size for f in STUDENT_FILES},
        "ops": sorted(quantize.op_types(onnx_path)),
    }
    (out_dir / "student_check.json").write_text(json.dumps(check, indent=1))
    spec = student.spec
    return {
        "file": STUDENT_FILES[0],
        "tokenizer": STUDENT_FILES[1],
        "backbone": f"student of {cfg.text_backbone}: teacher layers {spec['layers']}, "
        f"{spec['vocab']} word pieces" + (f", rank-{spec['rank']} word embeddings" if spec["rank"] else ""),
        "inputs": {"input_ids": ["batch", "tokens"], "attention_mask": ["batch", "tokens"]},
        "input_type": "int64",
        "output": "embedding",
        "dim": student.dim,
        "max_len": cfg.max_len,
        "max_chars": text.MAX_CHARS,
        "truncation": "first max_chars characters; no padding; over max_len tokens keep the first max_len-1 and the final [SEP]",
        "quantization": info["quantization"],
        "batchable": info["batchable"],
    }


# ---------------------------------------------------------------------------------------------
# choosing the student


def student_passes(teacher: dict, student: dict, bound: float = 0.005, keys=("micro_f1", "macro_f1")) -> bool:
    """True when the student's scores are within `bound` (0.005 = half an F1 point) of the
    teacher's, or above, for every metric in `keys` and every input mode present.

    Both dicts are flat ({"micro_f1": ...}) or by mode ({"plot": {...}, "plot+poster": {...}}), and
    must come from rows neither model learned from (the check fold; never the test split)."""
    if all(isinstance(v, dict) for v in teacher.values()):
        return all(student_passes(teacher[m], student[m], bound, keys) for m in teacher)
    return all(student[k] >= teacher[k] - bound for k in keys)
