"""The "int4" format's pruned vocabulary (pipeline/export/vocab.py): the training plots tokenize as with the
full vocabulary, and any other word still splits into pieces, never [UNK]."""

import json

import pytest

from pipeline.export import vocab
from pipeline.learn import text

TRAIN_PLOTS = [
    "A haunted cabin in the woods hides a demon.",
    "Two friends plan a heist and a chase through the city.",
    "An awkward wedding turns into a hilarious family dinner.",
]


@pytest.fixture(scope="module")
def full():
    return text.load_tokenizer("minilm")


@pytest.fixture(scope="module")
def pruned(full):
    base_json = json.loads(full.to_str())
    used = {i for p in TRAIN_PLOTS for i in full.encode(p).ids}
    keep = vocab.kept_ids(base_json, used)
    assert len(keep) < len(base_json["model"]["vocab"]) / 10
    return keep, vocab.load_tokenizer_json(vocab.pruned_tokenizer(base_json, keep))


def test_pruned_vocabulary_tokenizes_training_plots_as_the_full_one(pruned, full):
    keep, tok = pruned
    for plot in TRAIN_PLOTS:
        assert tok.encode(plot).tokens == full.encode(plot).tokens
        # ids are renumbered, consistently with the kept ids
        assert [keep[i] for i in tok.encode(plot).ids] == full.encode(plot).ids
    first = tok.encode(TRAIN_PLOTS[0])
    assert first.tokens[0] == "[CLS]" and first.tokens[-1] == "[SEP]"
    assert tok.token_to_id("[PAD]") == 0


@pytest.mark.parametrize(
    "word", ["spaceship", "zombies", "Kowalczyk", "antidisestablishmentarianism", "xqzv", "café", "1987"]
)
def test_unseen_and_rare_words_split_into_pieces_not_unk(pruned, full, word):
    _, tok = pruned
    enc = tok.encode(word)
    pieces = enc.tokens[1:-1]  # between [CLS] and [SEP]
    assert "[UNK]" not in enc.tokens, enc.tokens
    assert pieces, enc.tokens
    # the pieces spell the word again (lower-cased, accents as BERT's normaliser keeps them)
    assert "".join(p.removeprefix("##") for p in pieces) == full.normalizer.normalize_str(word)


def test_characters_the_full_vocabulary_lacks_stay_unknown_as_there(pruned, full):
    _, tok = pruned
    assert tok.encode("a \U0001f600 demon").tokens == full.encode("a \U0001f600 demon").tokens  # [UNK] for both
