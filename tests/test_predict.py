"""`python -m pipeline predict`: output format, posters, bad rows and bad input, per-mode thresholds,
and that parallel/batched runs give what one-at-a-time runs give.

Runs the committed models (assets/models), or copies of their manifest with one thing changed."""

import csv
import json
import random

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.serve import bomb_png
from pipeline import image
from pipeline.predict import GenrePredictor
from tests.conftest import ROOT, cli
from tests.tiny_data import poster

MODELS = ROOT / "assets/models"
SPEC = json.loads((MODELS / "manifest.json").read_text())
LABELS = SPEC["labels"]
PLOTS = [
    "A haunted cabin, a demon and a scream in the night.",
    "A wedding mix-up, an awkward roommate and a prank.",
    "Two friends plan a heist and a chase across the city.",
    "A soldier and a mercenary in a gunfight at the border.",
    "A young wizard and her dragon set out on a quest to save their kingdom.",
]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "img").mkdir()
    poster(tmp_path / "img" / "a.jpg", random.Random(1), ["Horror"])
    poster(tmp_path / "img" / "b.jpg", random.Random(2), ["Comedy"])
    (tmp_path / "img" / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "img" / "notes.txt").write_text("hello")
    return tmp_path


def models_with(folder, change) -> str:
    """A models folder beside the committed one: the same files, a manifest changed by `change(spec)`."""
    folder.mkdir()
    for name in SPEC["files"]:
        (folder / name).symlink_to(MODELS / name)
    spec = json.loads(json.dumps(SPEC))
    change(spec)
    (folder / "manifest.json").write_text(json.dumps(spec))
    return folder


def predict(csv_path, out, *flags, models=MODELS, check=True):
    return cli("predict", csv_path, "--out", out, "--models", models, *flags, check=check)


def read(out):
    return pd.read_csv(out, keep_default_na=False, dtype={"tmdb_id": str})


def test_output_columns_probabilities_genres_and_mode(inputs):
    rows = [[11, PLOTS[0], "img/a.jpg"], [12, PLOTS[1], ""]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], rows)
    proc = predict(src, inputs / "out.csv")
    assert proc.returncode == 0 and "warning" not in proc.stderr
    out = read(inputs / "out.csv")
    assert list(out.columns) == ["tmdb_id", *LABELS, "genres", "mode"]
    assert out.tmdb_id.tolist() == ["11", "12"]
    assert out["mode"].tolist() == ["plot+poster", "plot"]
    probs = out[LABELS].to_numpy(float)
    assert ((probs >= 0) & (probs <= 1)).all()
    for _, row in out.iterrows():
        assert row.genres and set(row.genres.split("|")) <= set(LABELS)


def test_without_tmdb_id_or_poster_columns(inputs):
    src = write_csv(inputs / "in.csv", ["overview"], [[PLOTS[2]]])
    predict(src, inputs / "out.csv")
    out = read(inputs / "out.csv")
    assert list(out.columns) == [*LABELS, "genres", "mode"] and len(out) == 1


def test_poster_changes_the_prediction_and_empty_poster_is_plot_only(inputs):
    src = write_csv(
        inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[1, PLOTS[0], "img/a.jpg"], [2, PLOTS[0], ""]]
    )
    predict(src, inputs / "out.csv")
    out = read(inputs / "out.csv")[LABELS].to_numpy(float)
    assert abs(out[0] - out[1]).max() > 1e-4


def test_unreadable_posters_fall_back_to_plot_only(inputs):
    plot = PLOTS[3]
    rows = [[1, plot, "img/broken.jpg"], [2, plot, "img/missing.jpg"], [3, plot, "img/notes.txt"], [4, plot, ""]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], rows)
    proc = predict(src, inputs / "out.csv")
    assert proc.returncode == 0  # every row got a prediction
    for line in (2, 3, 4):
        assert f"warning: line {line}: poster" in proc.stderr
    out = read(inputs / "out.csv")
    assert out["mode"].tolist() == ["plot"] * 4
    probs = out[LABELS].to_numpy(float)
    assert abs(probs[:3] - probs[3]).max() < 1e-6  # each bad poster row equals the plot-only row


@pytest.mark.parametrize(
    "kind, message",
    [("pixel-bomb", "megapixel limit"), ("over-20-MB", "MB limit"), ("folder", "not a regular file")],
)
def test_oversized_posters_are_refused_before_decoding(inputs, kind, message):
    path = inputs / "img" / "x.png"
    if kind == "pixel-bomb":
        path.write_bytes(bomb_png(30_000, 30_000))  # 900 megapixels claimed in a few hundred bytes
    elif kind == "over-20-MB":
        with open(path, "wb") as f:
            f.truncate(image.MAX_BYTES + 1)  # sparse: costs no disk
    else:
        path.mkdir()
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[1, PLOTS[0], "img/x.png"]])
    proc = predict(src, inputs / "out.csv")
    assert proc.returncode == 0 and "warning: line 2: poster 'img/x.png' unusable" in proc.stderr
    assert message in proc.stderr
    assert read(inputs / "out.csv")["mode"].tolist() == ["plot"]


# Each case: lines after the header (bytes), the line numbers reported as skipped, the tmdb_ids predicted.
MALFORMED = {
    "extra-fields": (b'1,"A heist, a chase",\n2,Too,many,fields\n3,A wedding.,\n', [3], ["1", "3"]),
    "too-few-fields": (b"1,A heist.,\n2\n3,A wedding.,\n", [3], ["1", "3"]),
    "text-after-quote": (b'1,A heist.,\n2,"A ghost"story,\n3,A wedding.,\n', [3], ["1", "3"]),
    "unclosed-quote": (b'1,"A ghost story,\n2,A heist.,\n3,"A wedding.",\n', [2], ["2", "3"]),
    "unclosed-quote-at-end": (b'1,A heist.,\n2,"A ghost story,\n', [3], ["1"]),
    "invalid-utf8": (b"1,A heist.,\n2,Caf\xe9 society in Paris.,\n3,A wedding.,\n", [3], ["1", "3"]),
    "line-over-1-MiB": (b"1,A heist.,\n2," + b"x" * (2**20 + 10) + b",\n3,A wedding.,\n", [3], ["1", "3"]),
}


@pytest.mark.parametrize("body, bad_lines, predicted", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_lines_are_reported_with_their_number_and_skipped(inputs, body, bad_lines, predicted):
    src = inputs / "in.csv"
    src.write_bytes(b"tmdb_id,overview,poster\n" + body)
    proc = predict(src, inputs / "out.csv", check=False)
    assert proc.returncode == 1, proc.stderr
    skipped = [int(n) for n in __import__("re").findall(r"warning: line (\d+): skipped", proc.stderr)]
    assert skipped == bad_lines, proc.stderr
    out = read(inputs / "out.csv")
    assert out.tmdb_id.tolist() == predicted
    assert (out.genres != "").all() and (out["mode"] == "plot").all()
    assert f"{len(bad_lines)} rows skipped" in proc.stderr


def test_multiline_quoted_overview_and_bom_are_fine(inputs):
    src = inputs / "in.csv"
    src.write_bytes(
        b'\xef\xbb\xbftmdb_id,overview\n1,"A ghost story.\nIn two paragraphs, with ""quotes""."\n\n2,A heist.\n'
    )
    proc = predict(src, inputs / "out.csv")
    assert proc.returncode == 0 and "warning" not in proc.stderr
    assert read(inputs / "out.csv").tmdb_id.tolist() == ["1", "2"]


def test_empty_overview_gets_a_warning_and_no_prediction(inputs):
    rows = [[1, ""], [2, "   "], [3, "x" * 30000], [4, "日本語のあらすじ。"], [5, PLOTS[1]]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview"], rows)
    proc = predict(src, inputs / "out.csv", check=False)
    assert proc.returncode == 1
    assert "warning: line 2: empty overview" in proc.stderr and "warning: line 3: empty overview" in proc.stderr
    out = read(inputs / "out.csv")
    assert out.tmdb_id.tolist() == ["1", "2", "3", "4", "5"]  # every parsed row keeps its place
    assert out.genres.tolist()[:2] == ["", ""] and out["mode"].tolist()[:2] == ["", ""]
    assert all(out.genres[2:]) and (out.loc[:1, LABELS] == "").all().all()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink-out"])
def test_posters_outside_the_csv_folder_are_refused_unless_allowed(inputs, tmp_path_factory, kind):
    outside = tmp_path_factory.mktemp("elsewhere")
    poster(outside / "p.jpg", random.Random(3), ["Horror"])
    if kind == "absolute":
        path = str(outside / "p.jpg")
    elif kind == "dotdot":
        path = "../" * len(inputs.parts) + str(outside / "p.jpg").lstrip("/")
    else:
        (inputs / "img" / "link.jpg").symlink_to(outside / "p.jpg")
        path = "img/link.jpg"
    src = write_csv(
        inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[1, PLOTS[0], path], [2, PLOTS[0], "img/a.jpg"]]
    )
    proc = predict(src, inputs / "out.csv")
    assert proc.returncode == 0 and "warning: line 2: poster" in proc.stderr and "refused" in proc.stderr
    assert read(inputs / "out.csv")["mode"].tolist() == ["plot", "plot+poster"]
    proc = predict(src, inputs / "out.csv", "--allow-outside")
    assert "warning" not in proc.stderr
    assert read(inputs / "out.csv")["mode"].tolist() == ["plot+poster", "plot+poster"]


def test_missing_overview_column_is_a_one_line_error(inputs):
    src = write_csv(inputs / "in.csv", ["tmdb_id", "plot"], [[1, "text"]])
    proc = predict(src, inputs / "out.csv", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "overview" in proc.stderr
    assert not (inputs / "out.csv").exists()


@pytest.mark.parametrize("content", [None, b"", b"tmdb_id,over\xffview\n1,x\n"], ids=["no-file", "empty", "bad-header"])
def test_unusable_csv_is_a_one_line_error(inputs, content):
    src = inputs / "in.csv"
    if content is not None:
        src.write_bytes(content)
    proc = predict(src, inputs / "out.csv", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (inputs / "out.csv").exists()


@pytest.mark.parametrize("missing", ["manifest.json", "text_encoder.onnx"])
def test_missing_models_name_the_path_and_the_command(inputs, tmp_path, missing):
    models = models_with(tmp_path / "models", lambda spec: None)
    (models / missing).unlink()
    src = write_csv(inputs / "in.csv", ["overview"], [[PLOTS[0]]])
    proc = predict(src, inputs / "out.csv", models=models, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert str(models / missing) in proc.stderr and "python -m pipeline export" in proc.stderr


@pytest.mark.parametrize("form", ["per-mode", "one-list"])
def test_each_row_uses_its_modes_thresholds(inputs, tmp_path, form):
    """Plot-only rows are decided by the "plot" thresholds and rows with a poster by "plot+poster"."""
    n = len(LABELS)

    def change(spec):  # "plot": nothing passes (so the single most probable genre); "plot+poster": everything
        spec["thresholds"] = {"plot": [1.01] * n, "plot+poster": [0.0] * n} if form == "per-mode" else [1.01] * n

    models = models_with(tmp_path / "models", change)
    rows = [[1, PLOTS[0], ""], [2, PLOTS[0], "img/a.jpg"]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], rows)
    predict(src, inputs / "out.csv", models=models)
    out = read(inputs / "out.csv")
    assert out["mode"].tolist() == ["plot", "plot+poster"]
    counts = [len(g.split("|")) for g in out.genres]
    assert counts == ([1, n] if form == "per-mode" else [1, 1])


def one_at_a_time(models, rows, base):
    """Today's way: one predictor call per row, plot alone or with its poster."""
    predictor = GenrePredictor(models)
    out = []
    for plot, path in rows:
        pixels = image.load_image(base / path) if path else None
        probs = predictor.probabilities(plot, pixels)
        out.append((probs, predictor.decide(probs, "plot+poster" if path else "plot")))
    return out


def float_text_encoder(path, dim: int):
    """A float (so batchable) text encoder: masked mean of a random embedding of each token id."""
    table = np.random.default_rng(0).normal(size=(1000, dim)).astype(np.float32)
    nodes = [
        helper.make_node("Mod", ["input_ids", "thousand"], ["row"]),
        helper.make_node("Gather", ["table", "row"], ["vectors"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
        helper.make_node("Mul", ["vectors", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "one"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "one"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["embedding"]),
    ]
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array(1000, np.int64), "thousand"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"])
        for n in ("input_ids", "attention_mask")
    ]
    out = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])]
    graph = helper.make_graph(nodes, "float_text", ints, out, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("encoder, tolerance", [("shipped-int8", 1e-6), ("float-batchable", 1e-5)])
def test_parallel_batched_run_equals_one_at_a_time(inputs, tmp_path, encoder, tolerance):
    """Workers and batches change nothing a user sees: every decision identical; probabilities within
    1e-6 when only the float fusion head is batched (the shipped int8 encoder runs one plot per call),
    within 1e-5 when a batchable float encoder runs padded batches; plus the CSV's 6-decimal rounding."""
    models = MODELS
    if encoder == "float-batchable":

        def change(spec):
            spec["text_encoder"]["file"] = "float_text.onnx"
            spec["text_encoder"]["batchable"] = True
            spec["files"]["float_text.onnx"] = {}

        models = models_with(tmp_path / "models", change)
        float_text_encoder(models / "float_text.onnx", SPEC["text_encoder"]["dim"])
    rng = random.Random(0)
    rows = []
    for i in range(150):  # lengths from a few words to past max_len tokens, a third with posters
        plot = " ".join(rng.choice(PLOTS) for _ in range(rng.choice([1, 2, 5, 40])))
        rows.append((plot, rng.choice(["img/a.jpg", "img/b.jpg"]) if i % 3 == 0 else ""))
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[i, p, q] for i, (p, q) in enumerate(rows)])
    predict(src, inputs / "out.csv", "--workers", "2", "--batch", "16", models=models)
    out = read(inputs / "out.csv")
    want = one_at_a_time(models, rows, inputs)
    got = out[LABELS].to_numpy(float)
    assert np.abs(got - np.array([p for p, _ in want])).max() <= tolerance + 5e-7
    assert out.genres.tolist() == ["|".join(g) for _, g in want]
    assert out["mode"].tolist() == ["plot+poster" if q else "plot" for _, q in rows]


def test_batching_the_dynamic_int8_encoder_would_change_outputs():
    """Why the manifest's "batchable" matters: the shipped encoder scales activations per input tensor,
    so two equal-length plots in one call embed differently from one at a time."""
    predictor = GenrePredictor(MODELS)
    assert predictor.text_batchable is False
    a, b = "A party goes wrong in the city.", "A wedding goes wrong in the city."
    ids = [predictor.tokenizer.encode(p).ids for p in (a, b)]
    assert len(ids[0]) == len(ids[1])
    batch = np.array(ids, np.int64)
    together = predictor.text.run(None, {"input_ids": batch, "attention_mask": np.ones_like(batch)})[0]
    alone = predictor.embed_plots([a, b], batch=32)  # not batchable: one call per plot
    assert np.abs(together - alone).max() > 1e-3
    assert np.array_equal(alone, np.concatenate([predictor.embed_plot(a), predictor.embed_plot(b)]))


def test_committed_models_predict(tmp_path):
    """The shipped models in assets/models run through the CLI with its defaults."""
    src = write_csv(tmp_path / "in.csv", ["overview"], [["A detective hunts a serial killer through a rainy city."]])
    cli("predict", src, "--out", tmp_path / "out.csv")
    out = read(tmp_path / "out.csv")
    assert list(out.columns) == [*LABELS, "genres", "mode"]


def test_batchable_flag_on_a_fixed_batch_graph_runs_one_at_a_time(inputs, tmp_path):
    """The shipped poster encoder's graph takes one image per call ([1, 3, h, w]): a manifest that
    calls it batchable must not make predict send it several."""

    def change(spec):
        spec["poster_encoder"]["batchable"] = True

    models = models_with(tmp_path / "models", change)
    assert GenrePredictor(models).poster_batchable is False
    rows = [(PLOTS[i % len(PLOTS)], "img/a.jpg" if i % 2 else "img/b.jpg") for i in range(6)]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[i, p, q] for i, (p, q) in enumerate(rows)])
    predict(src, inputs / "out.csv", "--workers", "1", "--batch", "4", models=models)
    got = read(inputs / "out.csv")[LABELS].to_numpy(float)
    want = np.array([p for p, _ in one_at_a_time(models, rows, inputs)])
    assert np.abs(got - want).max() <= 1e-6 + 5e-7
