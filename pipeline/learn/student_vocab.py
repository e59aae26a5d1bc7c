"""The student's vocabulary: the teacher's tokenizer pruned to the word pieces the student needs.

Kept: the special tokens, every single character and "##" + character (so any word still splits into
pieces, never all [UNK]), the ids the student's training plots use, and the teacher vocabulary's
first `top` word pieces (the most frequent ones). Ids are renumbered in the same order.
"""

import json

from tokenizers import Tokenizer

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FIRST_WORD = 1996  # in BERT's uncased vocabulary, ids from here are word pieces, roughly by frequency


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
