"""The format check (pipeline/stages/format_check.py, export/head_packing.py, choose/format_rule.py): the
head it judges is the head the packed file holds, bit for bit, and its CV check reads no test row (fold -1)."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from pipeline import config
from pipeline.export import head_packing, packing
from pipeline.learn import fusion
from pipeline.stages import export, format_check


def tiny_cfg():
    cfg = config.load()
    cfg.update(fusion_epochs=3, patience=2, fusion_hidden=64, fusion_batch=16)
    return cfg


def random_head(text_dim=48, image_dim=400, labels=5, hidden=64, seed=0):
    torch.manual_seed(seed)
    head = fusion.FusionHead(text_dim, image_dim, labels, hidden, 0.0)
    head.fit_scaling(
        np.random.default_rng(seed).normal(size=(10, text_dim)), np.ones((10, image_dim)), np.ones((10, 1))
    )
    return head.eval()


def test_store_like_rounds_exactly_as_the_packed_head_file_stores(tmp_path):
    head = random_head()
    export.export_head(fusion.ShippedHead(head, head), tmp_path, 48, 400)
    path = tmp_path / "fusion_head.onnx"
    plan = head_packing.head_plan(path)
    assert plan and all(bits == head_packing.HEAD_WEIGHTS[0] for bits, _, _ in plan.values())
    assert not [n for n in plan if "text_head" in n]  # the encoder's genre head stays float
    packing.pack(path, plan)
    stored = {
        i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(packing.model_source(path)).graph.initializer
    }
    rounded = head_packing.store_like(random_head())
    for name in plan:
        want = dict(rounded.named_parameters())[name.split(".", 1)[1]].detach().numpy()
        assert stored[name].tobytes() == want.astype("<f4").tobytes(), name


@pytest.mark.parametrize("pack_head", [False, True])
def test_the_format_check_reads_no_test_row(pack_head):
    """Test rows (fold -1) changed to anything: the same CV figures."""
    cfg = tiny_cfg()
    rng = np.random.default_rng(3)
    n, d, g = 90, 16, 4
    fold = np.array([0, 1, 2] * 24 + [-1] * 18)
    y = (rng.random((n, g)) < 0.4).astype(np.float32)  # invented labels: each genre on ~40 % of rows
    e32 = rng.normal(size=(n, d)).astype(np.float32) + y @ rng.normal(size=(g, d)).astype(np.float32)
    e_file = e32 + rng.normal(0, 0.05, e32.shape).astype(np.float32)
    image = rng.normal(size=(n, 20)).astype(np.float32)
    has_poster = np.ones((n, 1), np.float32)
    text_head = torch.nn.Linear(d, g)
    shipped = {"plot": "plot_head", "plot+poster": "fusion"}
    args = (e32, e_file, image, has_poster, y, fold, text_head, shipped)
    first = format_check.cv_of_format(cfg, *args, pack_head=pack_head)
    test = fold < 0  # the rows the check must never read
    changed = [a.copy() for a in (e32, e_file, image, y)]
    for a in changed:
        a[test] = rng.normal(size=a[test].shape) * 100
    second = format_check.cv_of_format(
        cfg, *changed[:3], has_poster, changed[3], fold, text_head, shipped, pack_head=pack_head
    )
    assert first == second
    assert set(first) == {"plot", "plot+poster"} and all(
        0 <= v["format"] <= 1 for m in first.values() for v in m.values()
    )


def test_int4_is_fitted_to_extra_row_plots_only(monkeypatch, tmp_path):
    """choose_format hands GPTQ (export_encoder's calibration) extra-row plots, none of the dev plots it
    checks; and export_encoder refuses int4 without them rather than fall back on dev plots."""
    import types

    import pandas as pd

    cfg = tiny_cfg()
    cfg.update(text_formats="int4,weights")
    extra_plots = [f"extra plot {i}" for i in range(700)]  # invented: more than GPTQ_PLOTS
    movies = pd.DataFrame({"overview": [f"dev plot {i}" for i in range(9)], "fold": [0, 1, 2] * 3})
    seen = {}

    class Stop(Exception):
        pass

    def export_encoder(cfg, parts, dev_plots, out, mode, calibration_plots=None):
        seen[mode] = calibration_plots
        raise Stop

    table = types.SimpleNamespace(num_embeddings=7)
    model = types.SimpleNamespace(
        backbone=types.SimpleNamespace(embeddings=types.SimpleNamespace(word_embeddings=table))
    )
    monkeypatch.setattr(export.text_export, "prune_vocabulary", lambda m, tok_json, plots, max_len: (m, "{}"))
    monkeypatch.setattr(export.vocab, "load_tokenizer_json", lambda tok: tok)
    monkeypatch.setattr(export, "export_encoder", export_encoder)
    with pytest.raises(Stop):
        export.choose_format(
            cfg,
            (model, None, "{}", "minilm"),
            movies.overview.tolist(),
            tmp_path,
            movies,
            None,
            {"extra_plots": extra_plots},
            {},
        )
    fit = seen["int4"]
    assert len(fit) == export.GPTQ_PLOTS == len(set(fit)) and set(fit) <= set(extra_plots)
    monkeypatch.undo()
    for none in (None, []):  # no extra rows: refused, never nearest rounding or dev plots in its place
        with pytest.raises(ValueError, match="training rows"):
            export.export_encoder(cfg, (model, None, "{}", "minilm"), ["a dev plot"] * 4, tmp_path, "int4", none)
