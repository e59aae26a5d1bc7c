"""The student text encoder: a BERT with fewer layers (copied from the teacher's), a pruned vocabulary
and a low-rank word-embedding table (V x rank codes times a rank x hidden projection, initialised by
SVD of the teacher's rows); mean pooling over the real tokens, as text.TextEncoder.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn

from pipeline import cache
from pipeline.learn import text
from pipeline.learn.student_vocab import load_tokenizer_json


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
    layers = [int(x) for x in str(cfg.student_layers).split(",") if x.strip()]
    bert = teacher.backbone.config.to_dict()
    keep = ("hidden_size", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps")
    keep += ("type_vocab_size", "pad_token_id")
    return {
        "layers": layers,
        "vocab": vocab,
        "rank": int(cfg.student_rank),
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
