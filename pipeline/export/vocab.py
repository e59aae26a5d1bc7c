"""The "int4" format's vocabulary: the encoder's tokenizer pruned to the word pieces its training plots use.

Kept: the special tokens, every single character and "##" + character (so any word still splits into
pieces, never all [UNK]) and the ids the training plots use. Ids are renumbered in the same order.
"""

import json

from tokenizers import Tokenizer

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def kept_ids(tokenizer_json: dict, used: set[int]) -> list[int]:
    """Token ids kept, ascending: special tokens, every single character and "##" + character, and the
    ids the training plots use."""
    vocab = tokenizer_json["model"]["vocab"]
    keep = {vocab[t] for t in SPECIAL if t in vocab}
    keep |= {i for t, i in vocab.items() if len(t.removeprefix("##")) == 1}
    keep |= set(used)
    return sorted(keep)


def pruned_tokenizer(tokenizer_json: dict, keep: list[int]) -> dict:
    """The tokenizer.json with only the `keep` ids, renumbered 0..len(keep)-1 in the same
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
