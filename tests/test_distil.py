"""The distilled student text encoder: vocabulary pruning (student_vocab), the model (student_model),
augmentation, the stage's rows (distil: plots only, never a test plot), ONNX export (text_export)."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline import config
from pipeline.export import packing, quantize, text_export
from pipeline.learn import augment, student_model, student_vocab, text
from pipeline.stages import distil
from tests.conftest import TINY

TRAIN_PLOTS = [
    "A haunted cabin in the woods hides a demon.",
    "Two friends plan a heist and a chase through the city.",
    "An awkward wedding turns into a hilarious family dinner.",
]


def tiny_config(tiny, **extra) -> config.Config:
    """The tiny run's configuration (conftest's TINY flags and folders) as a Config."""
    cfg = config.load()
    flags = dict(zip(TINY[::2], TINY[1::2]))
    for flag, value in flags.items():
        key = flag.removeprefix("--")
        cfg[key] = type(cfg[key])(value)
    cfg.update(data=str(tiny.data), work=str(tiny.work), site_data=str(tiny.site_data), models=str(tiny.models))
    cfg.update(extra=str(tiny.extra), threads=1, student_epochs=2, student_views=1, **extra)
    return cfg


@pytest.fixture(scope="module")
def base_json():
    return json.loads(text.load_tokenizer("minilm").to_str())


@pytest.fixture(scope="module")
def pruned(base_json):
    tok = text.load_tokenizer("minilm")
    used = {i for p in TRAIN_PLOTS for i in tok.encode(p).ids}
    keep = student_vocab.kept_ids(base_json, used)
    return keep, student_vocab.load_tokenizer_json(student_vocab.pruned_tokenizer(base_json, keep))


def test_pruned_vocabulary_tokenizes_training_plots_as_the_teacher(pruned, base_json):
    keep, student_tok = pruned
    teacher_tok = text.load_tokenizer("minilm")
    assert len(keep) < len(base_json["model"]["vocab"]) / 10
    for plot in TRAIN_PLOTS:
        assert student_tok.encode(plot).tokens == teacher_tok.encode(plot).tokens
        # ids are renumbered, consistently with the kept teacher ids
        assert [keep[i] for i in student_tok.encode(plot).ids] == teacher_tok.encode(plot).ids
    first = student_tok.encode(TRAIN_PLOTS[0])
    assert first.tokens[0] == "[CLS]" and first.tokens[-1] == "[SEP]"
    assert student_tok.token_to_id("[PAD]") == 0


@pytest.mark.parametrize(
    "word", ["spaceship", "zombies", "Kowalczyk", "antidisestablishmentarianism", "xqzv", "café", "1987"]
)
def test_unseen_and_rare_words_split_into_pieces_not_unk(pruned, word):
    _, student_tok = pruned
    enc = student_tok.encode(word)
    pieces = enc.tokens[1:-1]  # between [CLS] and [SEP]
    assert "[UNK]" not in enc.tokens, enc.tokens
    assert pieces, enc.tokens
    # the pieces spell the word again (lower-cased, accents as BERT's normaliser keeps them)
    spelled = "".join(p.removeprefix("##") for p in pieces)
    assert spelled == text.load_tokenizer("minilm").normalizer.normalize_str(word)
    print(word, "->", pieces)


def test_characters_the_teacher_lacks_stay_unknown_as_in_the_teacher(pruned):
    _, student_tok = pruned
    teacher = text.load_tokenizer("minilm").encode("a \U0001f600 demon").tokens
    assert student_tok.encode("a \U0001f600 demon").tokens == teacher  # [UNK] for both


def test_augment_gives_new_nonempty_texts():
    rng = np.random.default_rng(0)
    plot = "One. Two is here. Three comes later! Four ends it?"
    views = {augment.augment(plot, rng, "Another plot. With two sentences.") for _ in range(40)}
    assert all(v.strip() for v in views)
    assert len(views) > 10 and any(v != plot for v in views)


@pytest.fixture(scope="module")
def student_pair(base_json):
    """A 1-layer, rank-16 student initialised from the pretrained MiniLM (no training)."""
    teacher = text.TextEncoder("minilm").eval()
    tok = text.load_tokenizer("minilm")
    keep = student_vocab.kept_ids(base_json, {i for p in TRAIN_PLOTS for i in tok.encode(p).ids})
    cfg = config.Config(max_len=64, student_layers="5", student_rank=16)
    student = student_model.StudentEncoder(student_model.student_spec(cfg, teacher, len(keep)))
    student_model.init_from_teacher(student, teacher, keep)
    return teacher, student.eval(), student_vocab.load_tokenizer_json(student_vocab.pruned_tokenizer(base_json, keep))


def test_full_rank_student_with_all_layers_is_the_teacher(base_json):
    """Initialisation copies the teacher exactly: same layers, full rank, kept rows."""
    teacher = text.TextEncoder("minilm").eval()
    tok = text.load_tokenizer("minilm")
    keep = student_vocab.kept_ids(base_json, {i for p in TRAIN_PLOTS for i in tok.encode(p).ids})
    cfg = config.Config(max_len=64, student_layers="0,1,2,3,4,5", student_rank=0)
    student = student_model.StudentEncoder(student_model.student_spec(cfg, teacher, len(keep)))
    student_model.init_from_teacher(student, teacher, keep)
    student_tok = student_vocab.load_tokenizer_json(student_vocab.pruned_tokenizer(base_json, keep))
    with torch.no_grad():
        for plot in TRAIN_PLOTS:
            a = teacher(*text.pad([text.encode(tok, plot, 64)]))
            b = student.eval()(*text.pad([text.encode(student_tok, plot, 64)]))
            assert torch.allclose(a, b, atol=1e-5)


def test_exported_student_matches_torch_and_is_batch_invariant(student_pair, tmp_path):
    """The student in the 8-bit format export writes it in (quantize.TEXT_MODE): within the export's bound
    of the float graph, and batching changes nothing beyond float reassociation."""
    _, student, student_tok = student_pair
    plots = TRAIN_PLOTS + ["A ghost. A kiss.", "The soldier's letters reach her one summer, years after the war ended."]
    ids = [text.encode(student_tok, p, 64) for p in plots]
    x = torch.tensor([ids[0]])
    fp32 = tmp_path / "fp32.onnx"
    axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        "embedding": {0: "batch"},
    }
    quantize.export_onnx(student, (x, torch.ones_like(x)), fp32, ["input_ids", "attention_mask"], "embedding", axes)
    with torch.no_grad():
        ref = np.concatenate([student(*text.pad([r])).numpy() for r in ids])
    assert np.abs(quantize.outputs(fp32, quantize.text_feeds(ids)) - ref).max() < 1e-4
    out = tmp_path / "student.onnx"
    info = quantize.quantize_text(fp32, out, quantize.TEXT_MODE)
    cos = quantize.embedding_cosine(fp32, out, quantize.text_feeds(ids))
    assert cos["min"] >= text_export.MIN_COSINE, cos  # the export's acceptance bound
    spread = quantize.batch_matches(out, ids)
    print(info, cos, "batched vs single", spread)
    # batchable: batching changes nothing beyond float reassociation of padded rows (~1e-6 of embeddings
    # near 1 in size, x100 margin)
    assert info["batchable"] and spread <= 1e-4
    assert not (quantize.op_types(out) - STANDARD_OPS)


STANDARD_OPS = {  # plain ai.onnx operators the exported transformer uses (wasm runs every ai.onnx op)
    *("Add", "And", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Div", "Equal", "Erf", "Expand"),
    *("Flatten", "Gather", "GreaterOrEqual", "IsNaN", "LayerNormalization", "MatMul", "Mul", "Range"),
    *("ReduceSum", "Reshape", "Shape", "Slice", "Softmax", "Sqrt", "Pow", "ReduceMean", "Sub", "Transpose"),
    *("Unsqueeze", "Where", "Not", "Less", "Squeeze", "Neg", "DequantizeLinear"),  # DQ: the 8-bit embedding tables
}


@pytest.fixture(scope="module")
def distilled(tiny):
    cfg = tiny_config(tiny)
    return cfg, distil.run(cfg)


def test_distil_stage_never_reads_a_main_plot_and_learns(distilled):
    import pandas as pd

    cfg, out = distilled
    movies = pd.read_csv(next((cfg.path("work") / "data").glob("*/movies.csv")), keep_default_na=False)
    extra = pd.read_csv(next((cfg.path("work") / "data").glob("*/extra.csv")), keep_default_na=False)
    # the plots it learns from (and builds its vocabulary from): extra plots only, never a dev or test plot,
    # so the CV check on the dev folds scores plots the student never saw (the tiny data has no word piece
    # of its own in the main plots, so the vocabulary is checked through the plots it is built from)
    plots, counts = distil.training_plots(cfg, extra, np.arange(len(extra)))
    assert plots and set(plots) <= set(extra.overview) and not set(movies.overview) & set(plots)
    assert counts == {"extra": len(plots)} and len(plots) <= cfg.student_plots
    tok = text.load_tokenizer(cfg.text_backbone)
    vocab = set(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"])
    assert {t for p in plots for t in tok.encode(p).tokens} <= vocab
    history = json.loads((out / "history.json").read_text())
    assert history["plots"] == counts
    assert len(history["history"]) == 2 and history["history"][-1]["logit_mse"] < history["history"][0]["logit_mse"]
    assert np.load(out / "embeddings.npy").shape == (len(movies), 384)


def test_distil_stage_is_cached(distilled, capsys):
    cfg, out = distilled
    again = distil.run(cfg)
    assert again.path == out.path and "[distil] cached" in capsys.readouterr().out


def test_text_export_writes_a_runnable_encoder_that_computes_in_float(distilled, tmp_path):
    import pandas as pd

    cfg, out = distilled
    student, tok = student_model.load_student(out)
    movies = pd.read_csv(next((cfg.path("work") / "data").glob("*/movies.csv")), keep_default_na=False)
    dev = movies.overview[movies.fold >= 0].tolist()[:48]  # dev plots, as export checks on
    ids = [text.encode(tok, p, cfg.max_len) for p in dev]
    check = text_export.export_text_encoder(
        student, tmp_path / "student.onnx", [], ids, cfg.max_len, quantize.TEXT_MODE
    )
    assert check["onnx_fp32_vs_torch_max_abs"] < 1e-4  # the same float32 graph: reassociation only
    assert check["cosine_to_fp32"]["min"] >= text_export.MIN_COSINE  # the export's own acceptance bound
    assert check["integer_ops"] == [] and check["batchable"]
    sess = ort.InferenceSession(packing.model_source(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([text.encode(tok, "A haunted cabin and a zyxwvut demon.", cfg.max_len)], np.int64)
    emb = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert emb.shape == (1, student.dim) and np.isfinite(emb).all()
    with torch.no_grad():
        ref = student(torch.from_numpy(ids), torch.ones_like(torch.from_numpy(ids))).numpy()
    assert (
        quantize.cosines(emb, ref)[0] >= text_export.MIN_COSINE - 0.005
    )  # an unseen plot: the dev bound less a margin
