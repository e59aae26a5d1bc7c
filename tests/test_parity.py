"""The exported ONNX models compute what the torch models compute.

Bounds (issue 15's error model): a shipped file differs from fp32 by its weights' rounding, which the
export checks on dev inputs (cosine >= MIN_COSINE = 0.99, text_export / export) and which was measured per
format (pipeline/export/quantize.py's docstring: 8-bit weights with float compute, the poster encoder's and
the 8-bit text format, worst 0.9985 on 200 real dev plots, 0.997 on 60 real dev posters); the inputs here
are not the checked ones: margin 0.005 below the export's 0.99. The shipped files compute in float (no
integer operator: quantize.integer_ops, asserted below), so another CPU adds float rounding only (relative
~1e-6); fp16-stored float files: weight rounding 2^-11, cosine >= 0.999. A 4-bit text file is accepted by
export's CV check (format_check), not by a cosine: INT4_COSINE is the tiny run's own measurement less a
margin, so a worse rebuild or rounding fails here.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pipeline import cache
from pipeline.export import head_packing, packing, quantize, text_export
from pipeline.learn import fusion, poster_encoder, text
from pipeline.runtime import image_io
from pipeline.runtime.predict import GenrePredictor
from pipeline.stages import data, export, finetune, select
from tests.conftest import tiny_config

INT8_COSINE = text_export.MIN_COSINE - 0.005  # the export's bound on dev inputs, margin for other inputs (docstring)
# int4 is accepted by CV, not a cosine; this bound is the measured minimum less a margin, so a worse rebuild or
# rounding fails: the tiny run's fine-tuned encoder as export builds int4 (test_int4_text_encoder_matches_torch) gave
# 0.921 over PLOTS (the others 0.94-0.97); GPTQ on other subsets of its 48 calibration plots, or nearest
# rounding, gave minima of 0.927-0.935, so the margin, 0.011, is that spread. (The real shipped 4-bit file
# measured >= 0.96 on PLOTS, issue 27; the real data's check: dev min 0.985 on 200 plots, shipped.json.)
INT4_COSINE = 0.91
FLOAT_COSINE = 0.999  # fp16-stored weights: relative rounding 2^-11 per weight, margin x10 (docstring)

PLOTS = [
    "A retired soldier is pulled back for one last rescue mission behind enemy lines.",
    "Two strangers keep missing each other in a summer of letters and near misses.",
    "The ghost in the cabin wants the family gone before the first snow falls. " * 12,  # over max_len
    "Short plot, odd chars: café, naïve — 1984!",
]


def cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def predictor(tiny):
    return GenrePredictor(tiny.models)


def stage_output(tiny, name: str) -> cache.Output:
    folder = tiny.stage(name)
    return cache.Output(folder, folder.name)


@pytest.fixture(scope="module")
def torch_text(tiny):
    """The fine-tuned text encoder the tiny run exported, in torch."""
    folder = tiny.stage("finetune")
    return text.TextEncoder("minilm", folder / "encoder.safetensors").eval(), text.load_tokenizer("minilm")


@pytest.mark.parametrize("plot", PLOTS)
def test_shipped_text_encoder_matches_torch(predictor, torch_text, plot):
    """The shipped file against its torch model on the same word pieces, window by window (a plot over
    max_len is read in several): the shipped tokenizer's ids (a pruned vocabulary's, when it has one)
    mapped back to the torch model's by the pieces' strings."""
    model, tok = torch_text
    shipped = predictor.tokenizer.get_vocab()
    back = {i: tok.token_to_id(piece) for piece, i in shipped.items()}
    windows = predictor.encode(plot)  # several windows are all max_len long: one tensor
    ids = torch.tensor([[back[i] for i in window] for window in windows])
    with torch.no_grad():
        expected = model(ids, torch.ones_like(ids)).numpy()
    got = predictor.embed_plot(plot)
    assert got.shape == expected.shape == (len(windows), 384)
    assert (len(windows) > 1) == (len(predictor.token_ids(plot)) > predictor.spec["text_encoder"]["max_len"])
    quantization = predictor.spec["text_encoder"]["quantization"]
    bound = INT4_COSINE if "4-bit" in quantization else INT8_COSINE if "int8" in quantization else FLOAT_COSINE
    assert min(cosine(g, e) for g, e in zip(got, expected)) >= bound


def test_text_export_writes_a_runnable_encoder_that_computes_in_float(tiny, torch_text, tmp_path):
    """export_text_encoder in the 8-bit format on dev plots: parity with torch, the export's own acceptance
    bound, float compute, batchable; and the file runs an unseen plot close to torch."""
    import pandas as pd

    model, tok = torch_text
    cfg = tiny_config(tiny)
    movies = pd.read_csv(tiny.stage("data") / "movies.csv", keep_default_na=False)
    ids = [text.encode(tok, p, cfg.max_len) for p in movies.overview[movies.fold >= 0].tolist()[:48]]
    check = text_export.export_text_encoder(model, tmp_path / "text.onnx", [], ids, cfg.max_len, quantize.TEXT_MODE)
    assert check["onnx_fp32_vs_torch_max_abs"] < 1e-4  # the same float32 graph: reassociation only
    assert check["cosine_to_fp32"]["min"] >= text_export.MIN_COSINE  # the export's own acceptance bound
    assert check["integer_ops"] == [] and check["batchable"]
    x = np.array([text.encode(tok, "A haunted cabin and a zyxwvut demon.", cfg.max_len)], np.int64)
    got = quantize.session(tmp_path / "text.onnx").run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x), torch.ones_like(torch.from_numpy(x))).numpy()
    assert got.shape == (1, model.dim) and cosine(got, expected) >= INT8_COSINE  # an unseen plot (docstring)


@pytest.fixture(scope="module")
def int4_encoder(tiny, tmp_path_factory):
    """The tiny run's fine-tuned encoder as export's "int4" format builds it (export.int4_parts: the vocabulary pruned to
    the extra rows' word pieces; GPTQ on export.gptq_calibration's extra-row plots, all of the tiny run's):
    (the torch model it was built from, its tokenizer, a session of the file)."""
    cfg = tiny_config(tiny)
    encoder = text.TextEncoder("minilm", tiny.stage("finetune") / "encoder.safetensors").eval()
    extra, _ = data.load_extra(stage_output(tiny, "data"))
    plots = extra.overview.iloc[select.load(stage_output(tiny, "select"))].tolist()  # as export reads them
    parts = (encoder, text.load_tokenizer("minilm"), text.tokenizer_json("minilm"), "minilm")
    model, tok, _, _ = export.int4_parts(cfg, parts, plots)
    calibration, _ = export.gptq_calibration(cfg, plots, count=min(export.GPTQ_PLOTS, len(plots)))
    folder = tmp_path_factory.mktemp("int4")
    ids = [text.encode(tok, p, cfg.max_len) for p in calibration]
    text_export.export_fp32(model, folder / "fp32.onnx", ids[0])
    info = quantize.quantize_text(folder / "fp32.onnx", folder / "int4.onnx", "int4", quantize.text_feeds(ids))
    assert "GPTQ" in info["quantization"] and info["integer_ops"] == []
    return model, tok, quantize.session(folder / "int4.onnx"), cfg.max_len


@pytest.mark.parametrize("plot", PLOTS)
def test_int4_text_encoder_matches_torch(int4_encoder, plot):
    """The 4-bit format (the real data's shipped one) against its torch model: within INT4_COSINE (where it
    comes from: there)."""
    model, tok, session, max_len = int4_encoder
    x = np.array([text.encode(tok, plot, max_len)], np.int64)
    with torch.no_grad():
        expected = model(torch.from_numpy(x), torch.ones_like(torch.from_numpy(x))).numpy()
    got = session.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})[0]
    print("int4 cosine", round(cosine(got, expected), 4))
    assert cosine(got, expected) >= INT4_COSINE


def test_truncation_keeps_the_final_separator():
    tok = text.load_tokenizer("minilm")
    ids = text.encode(tok, PLOTS[2], 64)
    assert len(ids) == 64 and ids[0] == 101 and ids[-1] == 102


def test_huge_input_is_cut_to_max_chars_before_tokenizing():
    tok = text.load_tokenizer("minilm")
    huge = "word " * 1_000_000  # 5 MB of text
    assert text.encode(tok, huge, 64) == text.encode(tok, huge[: text.MAX_CHARS], 64)
    assert len(text.encode(tok, "x" * 50_000, 10_000)) <= 3  # one over-long word: [CLS] [UNK] [SEP]


@pytest.mark.parametrize("size", [(185, 278), (300, 450), (57, 80), (700, 1024)])
@pytest.mark.parametrize("genres", [["Horror", "Romance"], ["Comedy", "Action"]])
def test_poster_encoder_matches_torch(predictor, tmp_path, size, genres):
    """The shipped poster encoder against the torch one, on posters like the training ones: int8
    within INT8_COSINE, float (fp16-stored) within FLOAT_COSINE (module docstring: where they come from)."""
    import random

    from tests.tiny_data import poster

    poster(tmp_path / "p.jpg", random.Random(size[0]), genres, size=size)
    pixels = image_io.load_image(tmp_path / "p.jpg")
    with torch.no_grad():
        expected = poster_encoder.PosterEncoder(224).eval()(poster_encoder.to_tensor(pixels)).numpy()
    got = predictor.embed_poster(pixels)
    assert got.shape == (1, predictor.spec["poster_encoder"]["dim"])
    int8 = "int8" in str(predictor.spec["poster_encoder"].get("quantization", ""))
    assert cosine(got, expected) >= (INT8_COSINE if int8 else FLOAT_COSINE)


def test_shipped_files_hold_no_integer_operator(tiny):
    """Every graph the manifest ships computes in float, after onnxruntime's own optimizations too: no integer
    product (which x86 without VNNI may saturate) and no activation rounding (which float differences between
    CPUs or wasm can flip), so the checks above, run on this machine, hold on any machine up to float rounding.
    This is what is left of the int8 formats' saturation proof: a file with no integer operator needs none."""
    spec = json.loads((tiny.models / "manifest.json").read_text())
    for part in ("text_encoder", "poster_encoder", "fusion_head"):
        assert quantize.integer_ops(tiny.models / spec[part]["file"]) == set(), part


def test_fusion_head_matches_torch(tiny):
    """The exported head is the ShippedHead of each mode's chosen head, as export builds it."""
    spec = json.loads((tiny.models / "manifest.json").read_text())
    trained = stage_output(tiny, "train")
    text_head = finetune.load_head(stage_output(tiny, "finetune"))
    heads = {m: export.head_for(i, trained, text_head, 1280) for m, i in spec["fusion_head"]["heads"].items()}
    if spec["fusion_head"].get("weights_file"):  # its matrices as the packed file stores them
        heads = {m: head_packing.store_like(h) for m, h in heads.items()}
    head = fusion.ShippedHead(heads["plot"], heads["plot+poster"]).eval()
    session = ort.InferenceSession(packing.model_source(tiny.models / "fusion_head.onnx"))
    rng = np.random.default_rng(0)
    for has in (0.0, 1.0):
        feed = {
            "text": rng.normal(size=(3, 384)).astype(np.float32),
            "image": rng.normal(size=(3, 1280)).astype(np.float32),
            "has_poster": np.full((3, 1), has, np.float32),
        }
        with torch.no_grad():
            expected = head(*(torch.from_numpy(v) for v in feed.values()))[0].numpy()
        got = session.run(["probabilities"], feed)[0]
        # float32 either side, same arithmetic in another order: ~1e-7 relative on O(1) values, margin 100x
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_no_poster_ignores_the_image_input(tiny):
    session = ort.InferenceSession(packing.model_source(tiny.models / "fusion_head.onnx"))
    t = np.random.default_rng(1).normal(size=(1, 384)).astype(np.float32)
    off = np.zeros((1, 1), np.float32)
    a = session.run(None, {"text": t, "image": np.zeros((1, 1280), np.float32), "has_poster": off})[0]
    b = session.run(None, {"text": t, "image": np.ones((1, 1280), np.float32), "has_poster": off})[0]
    np.testing.assert_allclose(a, b, atol=1e-6)  # exactly equal by construction (image x 0); 1e-6: any float path


@pytest.fixture(scope="module")
def exported_poster(tmp_path_factory):
    from types import SimpleNamespace

    from pipeline.export import poster_cam

    out = tmp_path_factory.mktemp("poster")
    entry = poster_cam.export_poster(SimpleNamespace(image_size=224), out)
    return poster_encoder.PosterEncoder(224).eval(), ort.InferenceSession(str(out / entry["file"])), entry


@pytest.mark.parametrize("size", [(1, 1), (185, 278), (1024, 13), (50, 1000), (683, 1024)])
def test_exported_poster_encoder_is_the_torch_encoder_at_any_size(exported_poster, size):
    """The area resize inside the model: the exported graph computes PosterEncoder.forward for any input size."""
    encoder, session, entry = exported_poster
    rng = np.random.default_rng(size[0] * 7 + size[1])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    with torch.no_grad():
        expected = encoder(poster_encoder.to_tensor(pixels)).numpy()
        features = encoder.feature_maps(poster_encoder.to_tensor(pixels)).numpy()
    got, got_features = session.run(None, {"image": poster_encoder.to_tensor(pixels).numpy()})
    assert got.shape == (1, encoder.dim) and list(got_features.shape) == entry["outputs"]["features"]
    # fp16-stored weights, float compute: relative weight rounding 2^-11 ~ 5e-4 through 49 convolutions
    # (errors add in quadrature, not coherently): cosine 0.9999, largest element within 1% of the scale
    assert cosine(got, expected) >= 0.9999
    assert np.abs(got - expected).max() < 0.01 * np.abs(expected).max()
    assert np.abs(got_features - features).max() < 0.01 * np.abs(features).max()
