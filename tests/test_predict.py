"""`python -m pipeline predict`: output format, posters, bad rows and bad input, per-mode thresholds,
the manifest's rules, that parallel/batched runs give what one-at-a-time runs give, and long plots read
whole: windows that cover every token, each pooling, the sentence explanation's re-run windows.

Runs the tiny run's models (tests/conftest.py), or copies of their manifest with one thing changed; the
long-plot tests and a few others run the committed models (assets/models)."""

import csv
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.serve import bomb_png
from pipeline.runtime import bag, image_io, rules
from pipeline.runtime.predict import GenrePredictor, sentence_importance, workers_for
from pipeline.runtime.predictor import MAX_PADDING, MAX_TOKENS, length_batches, padded
from tests.conftest import ROOT, cli
from tests.tiny_data import poster

COMMITTED = ROOT / "assets/models"
PLOTS = [
    "A haunted cabin, a demon and a scream in the night.",
    "A wedding mix-up, an awkward roommate and a prank.",
    "Two friends plan a heist and a chase across the city.",
    "A soldier and a mercenary in a gunfight at the border.",
    "A young wizard and her dragon set out on a quest to save their kingdom.",
]

# A plot of three windows with the pinned rule (584 text tokens; windows of 254 every 190: 0, 190, 330), each
# part twice so that each window leans to its own genres: horror, then a comedy, then a war
HORROR = [
    "A family moves into an old farmhouse where a demon has waited for a century.",
    "At night the youngest daughter hears whispers behind the walls and finds scratches on her door.",
    "The father finds a cellar full of bones and a diary written in blood.",
    "A priest who tries to cleanse the house is found dead in the barn, his eyes gone.",
    "The mother is possessed and stalks her children through the dark corridors with a knife.",
    "Screams echo through the woods as the creature hunts anyone who tries to flee.",
]
COMEDY = [
    "Meanwhile in the city, a clumsy wedding planner mixes up two weddings on the same day.",
    "The groom of one ends up at the altar with the wrong bride and her very loud family.",
    "A best man with stage fright gives a toast that turns into a stand-up routine.",
    "The mothers of both couples start a food fight over the cake.",
    "A runaway goat eats the vows and the ring bearer loses the rings in the punch bowl.",
    "Everyone laughs, dances badly and falls into the pool.",
]
WAR = [
    "Years later, the planner's brother is a soldier in a platoon behind enemy lines in 1944.",
    "His unit is pinned down by artillery and machine guns on a frozen ridge.",
    "The sergeant leads a desperate charge against the German bunker while tanks roll in.",
    "Many of his comrades die in the battle before the allied bombers arrive.",
    "The survivors carry the wounded across the minefield to the field hospital.",
    "At the end, the war is over and he returns home with a medal and scars.",
]
LONG_PLOT = " ".join(HORROR * 2 + COMEDY * 2 + WAR * 2)


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


def models_with(folder, change, source):
    """A models folder: `source`'s files linked, its manifest (with rules) changed by `change(spec)`."""
    folder.mkdir()
    spec = json.loads((source / "manifest.json").read_text())
    for name in spec["files"]:
        (folder / name).symlink_to((source / name).resolve())
    change(spec)
    (folder / "manifest.json").write_text(json.dumps(spec))
    return folder


@pytest.fixture(scope="session")
def models(tiny, tmp_path_factory):
    """The tiny run's models, as `predict` reads them."""
    return models_with(tmp_path_factory.mktemp("with_rules") / "models", lambda spec: None, tiny.models)


@pytest.fixture(scope="session")
def spec(models):
    return json.loads((models / "manifest.json").read_text())


@pytest.fixture(scope="session")
def labels(spec):
    return spec["labels"]


def predict(csv_path, out, models, *flags, check=True):
    return cli("predict", csv_path, "--out", out, "--models", models, *flags, check=check)


def read(out):
    return pd.read_csv(out, keep_default_na=False, dtype={"tmdb_id": str})


def test_output_columns_probabilities_genres_and_mode(inputs, models, labels):
    rows = [[11, PLOTS[0], "img/a.jpg"], [12, PLOTS[1], ""]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], rows)
    proc = predict(src, inputs / "out.csv", models)
    # only its own line on stderr: no onnxruntime warnings (such as "Removing initializer") at load
    assert proc.returncode == 0 and proc.stderr.splitlines() == [f"wrote 2 predictions to {inputs / 'out.csv'}"]
    out = read(inputs / "out.csv")
    assert list(out.columns) == ["tmdb_id", *labels, "genres", "mode", "windows"]
    assert out.tmdb_id.tolist() == ["11", "12"] and out.windows.tolist() == [1, 1]
    assert out["mode"].tolist() == ["plot+poster", "plot"]
    probs = out[labels].to_numpy(float)
    assert ((probs >= 0) & (probs <= 1)).all()
    for _, row in out.iterrows():
        assert row.genres and set(row.genres.split("|")) <= set(labels)


def test_without_tmdb_id_or_poster_columns(inputs, models, labels):
    src = write_csv(inputs / "in.csv", ["overview"], [[PLOTS[2]]])
    predict(src, inputs / "out.csv", models)
    out = read(inputs / "out.csv")
    assert list(out.columns) == [*labels, "genres", "mode", "windows"] and len(out) == 1


def poster_matters(spec: dict) -> bool:
    """Whether the plot+poster mode's head reads the poster (export may ship the plot head for both modes)."""
    heads = spec["fusion_head"].get("heads", {})
    return heads.get("plot+poster") != heads.get("plot")


def test_poster_changes_the_prediction_and_empty_poster_is_plot_only(inputs, models, spec, labels):
    src = write_csv(
        inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[1, PLOTS[0], "img/a.jpg"], [2, PLOTS[0], ""]]
    )
    predict(src, inputs / "out.csv", models)
    out = read(inputs / "out.csv")
    assert out["mode"].tolist() == ["plot+poster", "plot"]
    change = abs(out[labels].to_numpy(float)[0] - out[labels].to_numpy(float)[1]).max()
    assert change > 1e-4 if poster_matters(spec) else change == 0


def test_unreadable_posters_fall_back_to_plot_only(inputs, models, labels):
    plot = PLOTS[3]
    rows = [[1, plot, "img/broken.jpg"], [2, plot, "img/missing.jpg"], [3, plot, "img/notes.txt"], [4, plot, ""]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], rows)
    proc = predict(src, inputs / "out.csv", models)
    assert proc.returncode == 0  # every row got a prediction
    for line in (2, 3, 4):
        assert f"warning: line {line}: poster" in proc.stderr
    out = read(inputs / "out.csv")
    assert out["mode"].tolist() == ["plot"] * 4
    probs = out[labels].to_numpy(float)
    assert abs(probs[:3] - probs[3]).max() < 1e-6  # each bad poster row equals the plot-only row


@pytest.mark.parametrize(
    "kind, message",
    [("pixel-bomb", "megapixel limit"), ("over-20-MB", "MB limit"), ("folder", "not a regular file")],
)
def test_oversized_posters_are_refused_before_decoding(inputs, models, kind, message):
    path = inputs / "img" / "x.png"
    if kind == "pixel-bomb":
        path.write_bytes(bomb_png(30_000, 30_000))  # 900 megapixels claimed in a few hundred bytes
    elif kind == "over-20-MB":
        with open(path, "wb") as f:
            f.truncate(image_io.MAX_BYTES + 1)  # sparse: costs no disk
    else:
        path.mkdir()
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[1, PLOTS[0], "img/x.png"]])
    proc = predict(src, inputs / "out.csv", models)
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
def test_malformed_lines_are_reported_with_their_number_and_skipped(inputs, models, body, bad_lines, predicted):
    src = inputs / "in.csv"
    src.write_bytes(b"tmdb_id,overview,poster\n" + body)
    proc = predict(src, inputs / "out.csv", models, check=False)
    assert proc.returncode == 1, proc.stderr
    skipped = [int(n) for n in re.findall(r"warning: line (\d+): skipped", proc.stderr)]
    assert skipped == bad_lines, proc.stderr
    out = read(inputs / "out.csv")
    assert out.tmdb_id.tolist() == predicted
    assert (out.genres != "").all() and (out["mode"] == "plot").all()
    assert f"{len(bad_lines)} rows skipped" in proc.stderr


def test_multiline_quoted_overview_and_bom_are_fine(inputs, models):
    src = inputs / "in.csv"
    src.write_bytes(
        b'\xef\xbb\xbftmdb_id,overview\n1,"A ghost story.\nIn two paragraphs, with ""quotes""."\n\n2,A heist.\n'
    )
    proc = predict(src, inputs / "out.csv", models)
    assert proc.returncode == 0 and "warning" not in proc.stderr
    assert read(inputs / "out.csv").tmdb_id.tolist() == ["1", "2"]


def test_empty_overview_gets_a_warning_and_no_prediction(inputs, models, labels):
    rows = [[1, ""], [2, "   "], [3, "x" * 30000], [4, "日本語のあらすじ。"], [5, PLOTS[1]]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview"], rows)
    proc = predict(src, inputs / "out.csv", models, check=False)
    assert proc.returncode == 1
    assert "warning: line 2: empty overview" in proc.stderr and "warning: line 3: empty overview" in proc.stderr
    out = read(inputs / "out.csv")
    assert out.tmdb_id.tolist() == ["1", "2", "3", "4", "5"]  # every parsed row keeps its place
    assert out.genres.tolist()[:2] == ["", ""] and out["mode"].tolist()[:2] == ["", ""]
    assert [str(w) for w in out.windows] == ["", "", "1", "1", "1"]  # one over-long word: [CLS] [UNK] [SEP]
    assert all(out.genres[2:]) and (out.loc[:1, labels] == "").all().all()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink-out"])
def test_posters_outside_the_csv_folder_are_refused_unless_allowed(inputs, models, tmp_path_factory, kind):
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
    proc = predict(src, inputs / "out.csv", models)
    assert proc.returncode == 0 and "warning: line 2: poster" in proc.stderr and "refused" in proc.stderr
    assert read(inputs / "out.csv")["mode"].tolist() == ["plot", "plot+poster"]
    proc = predict(src, inputs / "out.csv", models, "--allow-outside")
    assert "warning" not in proc.stderr
    assert read(inputs / "out.csv")["mode"].tolist() == ["plot+poster", "plot+poster"]


def test_missing_overview_column_is_a_one_line_error(inputs, models):
    src = write_csv(inputs / "in.csv", ["tmdb_id", "plot"], [[1, "text"]])
    proc = predict(src, inputs / "out.csv", models, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "overview" in proc.stderr
    assert not (inputs / "out.csv").exists()


@pytest.mark.parametrize("content", [None, b"", b"tmdb_id,over\xffview\n1,x\n"], ids=["no-file", "empty", "bad-header"])
def test_unusable_csv_is_a_one_line_error(inputs, models, content):
    src = inputs / "in.csv"
    if content is not None:
        src.write_bytes(content)
    proc = predict(src, inputs / "out.csv", models, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (inputs / "out.csv").exists()


UNUSABLE_MODELS = {  # (a file removed, a change to the manifest, what the one-line message names)
    "no-manifest": ("manifest.json", None, "manifest.json"),
    "no-text-encoder": ("text_encoder.onnx", None, "text_encoder.onnx"),
    "no-rules": (None, lambda spec: spec.pop("rules"), "has no rules"),
    "rules-without-windows": (None, lambda spec: spec["rules"].pop("windows"), "has no rules.windows"),
    "one-threshold-list": (None, lambda spec: spec.update(thresholds=spec["thresholds"]["plot"]), "per-mode"),
}


@pytest.mark.parametrize("removed, change, named", UNUSABLE_MODELS.values(), ids=UNUSABLE_MODELS.keys())
def test_unusable_models_name_the_problem_and_the_command(inputs, tmp_path, tiny, removed, change, named):
    """A missing file, a manifest without the rules (from an older export) or with one threshold list
    for both modes (the old format): exit 2, one line naming the problem and `python -m pipeline export`."""
    models = models_with(tmp_path / "models", change or (lambda spec: None), tiny.models)
    if removed:
        (models / removed).unlink()
        named = str(models / removed)
    src = write_csv(inputs / "in.csv", ["overview"], [[PLOTS[0]]])
    proc = predict(src, inputs / "out.csv", models, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert named in proc.stderr and "python -m pipeline export" in proc.stderr
    assert not (inputs / "out.csv").exists()


def test_unknown_decision_rule_is_refused(inputs, tmp_path, tiny):
    def change(spec):
        spec["rules"]["decision"] = {"predict_when": "probability > threshold", "if_none": "nothing"}

    models = models_with(tmp_path / "models", change, tiny.models)
    src = write_csv(inputs / "in.csv", ["overview"], [[PLOTS[0]]])
    proc = predict(src, inputs / "out.csv", models, check=False)
    assert proc.returncode == 2 and "unknown decision rule" in proc.stderr and proc.stderr.count("\n") == 1


def test_each_row_uses_its_modes_thresholds(inputs, tmp_path, tiny, labels):
    """Plot-only rows are decided by the "plot" thresholds and rows with a poster by "plot+poster"."""
    n = len(labels)

    def change(spec):  # "plot": nothing passes (so the single most probable genre); "plot+poster": everything
        spec["thresholds"] = {"plot": [1.01] * n, "plot+poster": [0.0] * n}

    models = models_with(tmp_path / "models", change, tiny.models)
    rows = [[1, PLOTS[0], ""], [2, PLOTS[0], "img/a.jpg"]]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], rows)
    predict(src, inputs / "out.csv", models)
    out = read(inputs / "out.csv")
    assert out["mode"].tolist() == ["plot", "plot+poster"]
    assert [len(g.split("|")) for g in out.genres] == [1, n]


def test_windows_and_sentences_follow_the_manifest(tmp_path):
    """The predictor reads the windows and the sentence pattern from manifest["rules"], not its own code: a
    60-character cut, windows of 8 ids (6 text tokens) every 3 tokens, the last ending with the text."""

    def change(spec):
        spec["rules"]["windows"] = {"max_chars": 60, "max_len": 8, "stride": 3, "pool": "max_probability"}
        spec["text_encoder"]["max_len"] = 8  # the window is the encoder's (manifest.check_windows)
        spec["rules"]["sentence_pattern"] = r"[^;]+;?\s*"

    predictor = GenrePredictor(models_with(tmp_path / "models", change, COMMITTED))
    plot = "Two friends plan a heist; a chase across the city; and a gunfight at the border."
    full = predictor.tokenizer.encode(plot[:60]).ids
    cls, body, sep = full[0], full[1:-1], full[-1]
    count = 1 + -(-(len(body) - 6) // 3)  # windows every 3 tokens until one reaches the end
    assert len(body) > 6 and predictor.encode(plot) == [
        [cls, *body[min(3 * k, len(body) - 6) :][:6], sep] for k in range(count)
    ]
    assert predictor.prediction(plot)[1] == count
    assert predictor.sentences(plot) == [
        "Two friends plan a heist; ",
        "a chase across the city; ",
        "and a gunfight at the border.",
    ]
    assert sentence_importance(predictor, plot)[0]["sentence"] == "Two friends plan a heist; "


def one_at_a_time(models, rows, base):
    """Today's way: one predictor call per row, plot alone or with its poster."""
    predictor = GenrePredictor(models)
    out = []
    for plot, path in rows:
        pixels = image_io.load_image(base / path) if path else None
        probs, windows = predictor.prediction(plot, pixels)
        out.append((probs, predictor.decide(probs, "plot+poster" if path else "plot"), windows))
    return out


SCALE = 0.05  # the fixed activation scale of the toy int8 encoder (its table is N(0, 1): int8 spans ±6.35)


def toy_text_encoder(path, dim: int, fixed_int8: bool = False):
    """A batchable text encoder: masked mean of a random embedding of each token id, the embeddings
    float or (fixed_int8) quantized to int8 with one fixed scale and dequantized, as a static QDQ model does."""
    table = np.random.default_rng(0).normal(size=(1000, dim)).astype(np.float32)
    quantize = [
        helper.make_node("QuantizeLinear", ["gathered", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["vectors"]),
    ]
    nodes = [
        helper.make_node("Mod", ["input_ids", "thousand"], ["row"]),
        helper.make_node("Gather", ["table", "row"], ["gathered" if fixed_int8 else "vectors"]),
        *(quantize if fixed_int8 else []),
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
        numpy_helper.from_array(np.array(SCALE, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
    ]
    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"])
        for n in ("input_ids", "attention_mask")
    ]
    out = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])]
    graph = helper.make_graph(nodes, "toy_text", ints, out, inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def with_toy_encoder(folder, source, fixed_int8: bool):
    toy = folder.parent / f"{folder.name}-toy_text.onnx"
    toy_text_encoder(toy, json.loads((source / "manifest.json").read_text())["text_encoder"]["dim"], fixed_int8)

    def change(spec):
        spec["text_encoder"]["file"] = "toy_text.onnx"
        spec["text_encoder"]["weights_file"] = None  # the toy graph holds its own float weights
        spec["text_encoder"]["batchable"] = True
        spec["files"]["toy_text.onnx"] = file_entry(toy)

    models = models_with(folder, change, source)
    toy.rename(models / "toy_text.onnx")
    return models


def file_entry(path) -> dict:
    """A manifest's "files" entry for the file at `path`, as export writes it."""
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def long_and_short_rows(n: int = 150) -> list[tuple[str, str]]:
    """(plot, poster) rows: lengths from a few words to past max_len tokens, a third with posters."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        plot = " ".join(rng.choice(PLOTS) for _ in range(rng.choice([1, 2, 5, 40])))
        rows.append((plot, rng.choice(["img/a.jpg", "img/b.jpg"]) if i % 3 == 0 else ""))
    return rows


# Tolerances: probabilities through the float fusion head agree to float32 rounding (1e-6) whether
# it runs one row or many per call; a batchable encoder's padded batch computes in a different order
# (float32 rounding: 2e-7 measured in a MiniLM embedding, 1.2e-7 by C for the shipped format; 1e-5
# leaves a margin for other CPUs' kernels); the CSV rounds to 6 decimals (5e-7).
HEAD_ONLY, BATCHED_ENCODER = 1e-6, 1e-5


def through_the_blend(predictor: GenrePredictor, rows, blended: np.ndarray, tolerance: float) -> np.ndarray:
    """[N, G]: a tolerance on the heads' probabilities p carried through the bag's blend to p' (what predict
    writes): |dp'/dp| = (1 - a) p'(1 - p') / (p (1 - p)), p recovered from p' by inverting bag.blend (p at
    least the blend's clip from 0 and 1). Near 0 or 1 the log-odds magnify a difference in p."""
    clip = predictor.rules["bag"]["clip"]
    a = np.array([predictor.bag_weight["plot+poster" if poster else "plot"] for _, poster in rows])[:, None]
    z = predictor.bag.logits([plot for plot, _ in rows])
    q = np.clip(blended.astype(np.float64), 1e-15, 1 - 1e-15)
    p = 1 / (1 + np.exp(-(np.log(q / (1 - q)) - a * z) / np.maximum(1 - a, 1e-12)))
    p = np.clip(p, clip, 1 - clip)
    return tolerance * np.where(a > 0, (1 - a) * q * (1 - q) / (p * (1 - p)), 1.0)


@pytest.mark.parametrize("encoder", ["tiny-run", "float-batchable", "fixed-int8-batchable"])
def test_parallel_batched_run_equals_one_at_a_time(inputs, tmp_path, tiny, spec, labels, encoder):
    """Workers and batches change nothing a user sees: every decision identical, probabilities within
    the tolerance above; the tiny run's encoder runs batched if its manifest says batchable, the toy
    ones (float, and int8 with a fixed activation scale) run padded, length-bucketed batches."""
    batched = encoder != "tiny-run" or spec["text_encoder"].get("batchable")
    tolerance = BATCHED_ENCODER if batched else HEAD_ONLY
    if encoder == "tiny-run":
        models = models_with(tmp_path / "models", lambda spec: None, tiny.models)
    else:
        models = with_toy_encoder(tmp_path / "models", tiny.models, encoder == "fixed-int8-batchable")
    rows = long_and_short_rows()
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[i, p, q] for i, (p, q) in enumerate(rows)])
    predict(src, inputs / "out.csv", models, "--workers", "2", "--batch", "16")
    out = read(inputs / "out.csv")
    want = one_at_a_time(models, rows, inputs)
    got, alone = out[labels].to_numpy(float), np.array([p for p, _, _ in want])
    assert (np.abs(got - alone) <= through_the_blend(GenrePredictor(models), rows, alone, tolerance) + 5e-7).all()
    assert out.genres.tolist() == ["|".join(g) for _, g, _ in want]
    assert out["mode"].tolist() == ["plot+poster" if q else "plot" for _, q in rows]
    assert out.windows.tolist() == [w for _, _, w in want] and max(out.windows) > 1  # long plots: several windows


def test_length_batches_pad_little_and_cover_every_row():
    lengths = [random.Random(i).choice([3, 5, 9, 40, 64, 64, 64, 200, 256]) for i in range(300)]
    calls = length_batches(lengths, 32)
    assert sorted(np.concatenate(calls).tolist()) == list(range(300))
    for rows in calls:
        width = [lengths[i] for i in rows]
        assert len(rows) <= 32 and max(width) <= MAX_PADDING * min(width)
        assert len(rows) * max(width) <= MAX_TOKENS or len(rows) == 1
    # as few calls as those bounds allow: one per distinct length, split only where it is full
    assert len(calls) == sum(-(-lengths.count(n) // min(32, MAX_TOKENS // n)) for n in set(lengths))


def test_sentence_importance_is_the_same_batched(tmp_path, tiny):
    predictor = GenrePredictor(with_toy_encoder(tmp_path / "models", tiny.models, fixed_int8=True))
    plot = " ".join(PLOTS)
    alone, batched = sentence_importance(predictor, plot), sentence_importance(predictor, plot, batch=8)
    assert [a["sentence"] for a in alone] == [b["sentence"] for b in batched] == predictor.sentences(plot)
    diffs = [abs(a["drop"][g] - b["drop"][g]) for a, b in zip(alone, batched) for g in a["drop"]]
    assert max(diffs) <= BATCHED_ENCODER


def test_batchable_says_whether_a_padded_batch_changes_outputs(models, spec):
    """The manifest's "batchable" is true to the tiny run's encoder. Dynamic int8 (not batchable)
    scales activations per input tensor, so even two equal-length plots in one call embed differently
    from one at a time; a batchable one gives the same embeddings in a padded call (within 1e-5)."""
    predictor = GenrePredictor(models)
    a, b, c = "A party goes wrong in the city.", "A wedding goes wrong in the city.", "A heist."
    encoded = [predictor.token_ids(p) for p in (a, b, c)]  # one window each
    assert len(encoded[0]) == len(encoded[1]) > len(encoded[2])
    alone = np.concatenate([predictor.embed_plot(p) for p in (a, b, c)])
    if spec["text_encoder"].get("batchable"):
        together = predictor.text.run(None, padded(encoded))[0]  # c padded to the others' length
        assert np.abs(together - alone).max() <= BATCHED_ENCODER
    else:
        together = predictor.text.run(None, padded(encoded[:2]))[0]
        assert np.abs(together - alone[:2]).max() > 1e-3
        assert np.array_equal(np.concatenate(predictor.embed_plots([a, b, c], batch=32)), alone)  # one per call


def test_batchable_flag_on_a_fixed_batch_graph_runs_one_at_a_time(inputs, tmp_path, tiny, labels):
    """The poster encoder's graph takes one image per call ([1, 3, h, w]): a manifest that calls it
    batchable must not make predict send it several."""

    def change(spec):
        spec["poster_encoder"]["batchable"] = True

    models = models_with(tmp_path / "models", change, tiny.models)
    assert GenrePredictor(models).poster_batchable is False
    rows = [(PLOTS[i % len(PLOTS)], "img/a.jpg" if i % 2 else "img/b.jpg") for i in range(6)]
    src = write_csv(inputs / "in.csv", ["tmdb_id", "overview", "poster"], [[i, p, q] for i, (p, q) in enumerate(rows)])
    predict(src, inputs / "out.csv", models, "--workers", "1", "--batch", "4")
    got = read(inputs / "out.csv")[labels].to_numpy(float)
    want = np.array([p for p, _, _ in one_at_a_time(models, rows, inputs)])
    assert (np.abs(got - want) <= through_the_blend(GenrePredictor(models), rows, want, HEAD_ONLY) + 5e-7).all()


def test_committed_models_predict(tmp_path):
    """The shipped models in assets/models run through the CLI with its defaults: a short plot read in one
    window, a long one in several (the `windows` column), each the predictor's probabilities."""
    shipped = GenrePredictor(COMMITTED)  # the rule as shipped, not the window tests' pinned one
    plots = ["A detective hunts a serial killer through a rainy city.", LONG_PLOT]
    src = write_csv(tmp_path / "in.csv", ["overview"], [[p] for p in plots])
    proc = cli("predict", src, "--out", tmp_path / "out.csv", check=False)
    assert proc.returncode == 0, proc.stderr
    out = read(tmp_path / "out.csv")
    assert list(out.columns) == [*shipped.labels, "genres", "mode", "windows"]
    assert out.windows.tolist() == [1, len(shipped.encode(LONG_PLOT))] == [1, 3]
    want = np.array([shipped.probabilities(p) for p in plots])
    assert np.abs(out[shipped.labels].to_numpy(float) - want).max() <= BATCHED_ENCODER + 5e-7


# --out is the input, spelled another way: refused (exit 2, one line) before anything is opened for writing
SAME_FILE = {
    "same-path": lambda src: src,
    "dot-dot": lambda src: src.parent / ".." / src.parent.name / src.name,
    "symlink": lambda src: (src.parent / "link.csv").symlink_to(src) or src.parent / "link.csv",
    "hard-link": lambda src: os.link(src, src.parent / "hard.csv") or src.parent / "hard.csv",
}


@pytest.mark.parametrize("spelling", SAME_FILE.values(), ids=SAME_FILE.keys())
def test_out_that_is_the_input_is_refused_before_anything_is_written(tmp_path, spelling):
    src = write_csv(tmp_path / "in.csv", ["overview"], [[PLOTS[0]], [PLOTS[1]]])
    before = src.read_bytes()
    out = spelling(src)
    # models that do not exist: the output is checked first, so its message is the one given
    proc = cli("predict", src, "--out", out, "--models", tmp_path / "no-models", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "is the input file" in proc.stderr and "--out" in proc.stderr
    assert src.read_bytes() == before  # not truncated
    # the reverse: the output given as the plain path, the input through the other spelling
    if out != src:
        proc = cli("predict", out, "--out", src, check=False)
        assert proc.returncode == 2 and "is the input file" in proc.stderr and src.read_bytes() == before


def test_an_output_that_cannot_be_written_is_a_one_line_error(tmp_path):
    src = write_csv(tmp_path / "in.csv", ["overview"], [[PLOTS[0]]])
    proc = cli("predict", src, "--out", tmp_path / "no-such-folder" / "out.csv", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot write" in proc.stderr, proc.stderr


def copied_models(tmp_path):
    """A real copy (not links) of the committed models folder, to change."""
    return Path(shutil.copytree(COMMITTED, tmp_path / "models"))


CHANGED_FILES = [
    "text_encoder.onnx",
    "text_encoder.weights",
    "tokenizer.json",
    "poster_encoder.onnx",
    "fusion_head.onnx",
]


@pytest.mark.parametrize("name", CHANGED_FILES)
@pytest.mark.parametrize("change", ["flip-one-byte", "one-byte-more"])
def test_a_model_file_that_differs_from_the_manifest_is_refused(tmp_path, name, change):
    """Each file's size and sha256 are checked against the manifest before anything runs: one byte changed
    (the size unchanged) or one more byte, and predict exits 2 with one line naming the file and the
    command that rebuilds it; no output is written. The same copy unchanged predicts."""
    models = copied_models(tmp_path)
    src = write_csv(tmp_path / "in.csv", ["overview"], [[PLOTS[0]]])
    assert cli("predict", src, "--out", tmp_path / "ok.csv", "--models", models).returncode == 0
    data = bytearray((models / name).read_bytes())
    if change == "flip-one-byte":
        data[len(data) // 2] ^= 0x01
    else:
        data += b"\0"
    (models / name).write_bytes(bytes(data))
    proc = cli("predict", src, "--out", tmp_path / "out.csv", "--models", models, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert str(models / name) in proc.stderr and "make pipeline" in proc.stderr
    assert "python -m pipeline export" in proc.stderr
    assert ("sha256" if change == "flip-one-byte" else "bytes") in proc.stderr
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("rows,workers", [(1, 1), (130, 2)])  # 130 rows: 3 chunks of 64, so a pool of 2
def test_a_bag_of_words_for_other_genres_is_refused(tmp_path, rows, workers):
    """A bag of words whose genres are not the manifest's labels (its files listed with their true size and
    sha256, so only the bag's own check can catch it) is refused as models to rebuild: GenrePredictor raises
    ModelsMissing, and predict exits 2 with one line and writes nothing (no probability blended from the
    wrong genres), in this process or before a pool of workers starts. The same check in the demo:
    tests/test_rules.py (bags that do not fit)."""
    from pipeline.runtime.manifest import ModelsMissing

    models = copied_models(tmp_path)
    spec = json.loads((models / "manifest.json").read_text())
    name = spec["bag_of_words"]["file"]
    bag_spec = json.loads((models / name).read_text())
    genres = len(bag_spec["bias"])
    assert genres == len(spec["labels"])  # as shipped
    terms, weights = len(bag_spec["terms"]), (models / spec["bag_of_words"]["weights_file"]).read_bytes()
    assert bag_spec["genres"] == spec["labels"]
    # one genre fewer, weights cut to match: a consistent bag of 17 genres beside 18 labels
    bag_spec.update(genres=bag_spec["genres"][:-1], bias=bag_spec["bias"][:-1], scale=bag_spec["scale"][:-1])
    cut = np.frombuffer(weights, np.int8).reshape(terms, genres)[:, :-1]
    (models / name).write_text(json.dumps(bag_spec))
    (models / spec["bag_of_words"]["weights_file"]).write_bytes(cut.tobytes())
    for f in (name, spec["bag_of_words"]["weights_file"]):
        data = (models / f).read_bytes()
        spec["files"][f] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (models / "manifest.json").write_text(json.dumps(spec))
    with pytest.raises(ModelsMissing, match="its genres .* are not the manifest's labels"):
        GenrePredictor(models)
    src = write_csv(tmp_path / "in.csv", ["overview"], [[PLOTS[i % len(PLOTS)]] for i in range(rows)])
    proc = cli("predict", src, "--out", tmp_path / "out.csv", "--models", models, "--workers", workers, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "are not the manifest's labels" in proc.stderr and "make pipeline" in proc.stderr
    assert not (tmp_path / "out.csv").exists()


def test_a_changed_poster_encoder_is_refused_before_a_plot_only_run(tmp_path):
    """The poster encoder is loaded only when a poster needs it, but checked at start all the same."""
    models = copied_models(tmp_path)
    data = bytearray((models / "poster_encoder.onnx").read_bytes())
    data[100] ^= 0xFF
    (models / "poster_encoder.onnx").write_bytes(bytes(data))
    src = write_csv(tmp_path / "in.csv", ["overview", "poster"], [[PLOTS[0], ""]])
    proc = cli("predict", src, "--out", tmp_path / "out.csv", "--models", models, "--workers", "1", check=False)
    assert proc.returncode == 2 and "poster_encoder.onnx does not match the manifest" in proc.stderr


def test_workers_follow_the_amount_of_input():
    """A chunk (64 rows) goes to one worker: never more workers than chunks, and one chunk is predicted in
    the main process (1: no pool)."""
    assert [workers_for(n, 2, 64) for n in (0, 1, 64, 65, 128, 129, 10_000)] == [1, 1, 1, 2, 2, 2, 2]
    assert [workers_for(n, 4, 64) for n in (64, 129, 200, 10_000)] == [1, 3, 4, 4]
    assert workers_for(10_000, 1, 64) == 1


# ---------------------------------------------------------------------------------------------
# Long plots read whole (issue 28), on the shipped models: the windows, their pooling, the sentence explanation.
# Where a figure is "by hand", it is computed here from the sessions and the token ids, not by rules.py.

ONE_TOKEN_WORDS = "the ghost city night house family war soldier love wedding friend killer detective ship".split()


def pinned(spec: dict, **windows) -> None:
    """The rule the window tests are written for, whatever the manifest ships: windows every 190 tokens (they
    overlap, the harder case) and every sentence left out alone (no explanation budget)."""
    spec["rules"]["windows"].update(stride=190, **windows)
    spec["rules"]["explanation"]["max_tokens"] = 10**9


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped files under the pinned rule."""
    return GenrePredictor(models_with(tmp_path_factory.mktemp("pinned") / "models", pinned, COMMITTED))


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """The shipped files under the pinned rule, for each pooling (the manifest's rules.windows.pool changed)."""
    made = {}

    def get(how: str) -> GenrePredictor:
        if how not in made:
            folder = tmp_path_factory.mktemp(how) / "models"
            made[how] = GenrePredictor(models_with(folder, lambda spec: pinned(spec, pool=how), COMMITTED))
        return made[how]

    return get


def words(tokens: int) -> str:
    """A text of exactly `tokens` text tokens: words the shipped tokenizer keeps whole, in turn."""
    return " ".join(ONE_TOKEN_WORDS[i % len(ONE_TOKEN_WORDS)] for i in range(tokens))


def embed(predictor: GenrePredictor, ids: list[int]) -> np.ndarray:
    """[text dim]: the text encoder's session on one window, by hand."""
    x = np.array([ids], np.int64)
    return predictor.text.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})[0][0]


def head(predictor: GenrePredictor, text: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """[G]: the fusion head's session on one text embedding (and a poster embedding), by hand."""
    feeds = {
        "text": text.reshape(1, -1).astype(np.float32),
        "image": np.zeros((1, predictor.image_dim), np.float32) if image is None else image.reshape(1, -1),
        "has_poster": np.full((1, 1), float(image is not None), np.float32),
    }
    return predictor.head.run(["probabilities"], feeds)[0][0]


def blended(predictor: GenrePredictor, probs: np.ndarray, plot: str, with_poster: bool = False) -> np.ndarray:
    """[G]: the plot's bag of words blended in at its mode's weight (bag.blend, its definition)."""
    weight = predictor.bag_weight["plot+poster" if with_poster else "plot"]
    return bag.blend(probs, predictor.bag.logits([plot])[0], weight)


def pooled_by_hand(predictor: GenrePredictor, how: str, texts: np.ndarray, image=None) -> np.ndarray:
    """[G] from window embeddings [windows, text dim]: the pooling's definition, written out."""
    if how == "mean_embedding":
        return head(predictor, texts.mean(0), image)
    probs = np.array([head(predictor, t, image) for t in texts])
    return probs.mean(0) if how == "mean_probability" else probs.max(0)


def starts_by_hand(tokens: int, width: int = 254, stride: int = 190) -> list[int]:
    """Window k starts at stride * k, the last at tokens - width so that it ends with the text."""
    count = 1 + max(0, -(-(tokens - width) // stride))
    return [min(stride * k, max(0, tokens - width)) for k in range(count)]


@pytest.mark.parametrize("tokens", [1, 200, 254, 255, 444, 445, 584, 2000])
def test_a_long_plot_is_read_in_windows_that_cover_every_token(shipped, tokens):
    """The pinned rule (windows of 256 ids, 254 text tokens, every 190): each window [CLS] + a run of the
    text's tokens + [SEP]; the runs start at 0, 190, ... and the last ends with the text, so every token is
    read, and the first window is what the first-window reading (255 ids and [SEP]) read."""
    plot = LONG_PLOT if tokens == 584 else words(tokens)
    ids = shipped.tokenizer.encode(plot).ids
    assert len(ids) == tokens + 2 and shipped.token_ids(plot) == ids
    cls, body, sep = ids[0], ids[1:-1], ids[-1]
    got = shipped.encode(plot)
    starts = starts_by_hand(tokens)
    assert got == [[cls, *body[s : s + 254], sep] for s in starts]
    read = set()
    for s in starts:
        read |= set(range(s, min(s + 254, tokens)))
    assert read == set(range(tokens))  # every token is in a window
    assert got[0] == (ids if len(ids) <= 256 else ids[:255] + ids[-1:])  # the first-window reading's ids
    assert all(len(w) <= 256 for w in got) and (len(got) == 1 or all(len(w) == 256 for w in got))


def test_a_huge_plot_is_read_to_max_chars(shipped):
    """Past max_chars (20,000) nothing is read: the windows of a 30,000-character plot are those of its cut."""
    plot = words(6000)
    assert len(plot) > 30_000
    cut = plot[:20_000]
    assert shipped.encode(plot) == shipped.encode(cut) and len(shipped.encode(plot)) > 10


@pytest.mark.parametrize("tokens", [3, 120, 254])
def test_a_plot_of_one_window_is_predicted_as_before(shipped, pooled, tokens):
    """A plot of at most max_len ids is one window: every pooling gives exactly what the first-window reading
    gave, the head on the encoder's embedding of the plot's ids (the sessions run by hand)."""
    plot = words(tokens)
    ids = shipped.tokenizer.encode(plot).ids
    want = blended(shipped, head(shipped, embed(shipped, ids)), plot)
    for how in rules.POOLS:
        probs, windows = pooled(how).prediction(plot)
        assert windows == 1 and np.array_equal(probs, want), how


POSTER_PIXELS = np.random.default_rng(5).integers(0, 256, (90, 60, 3), dtype=np.uint8)


@pytest.mark.parametrize("how", rules.POOLS)
@pytest.mark.parametrize("with_poster", [False, True], ids=["plot", "plot+poster"])
def test_each_pooling_is_its_definition_on_the_window_outputs(pooled, how, with_poster):
    """A 3-window plot: `probabilities` is the pooling of the windows, from the sessions by hand: the head on
    the mean of the three window embeddings, or the mean or the maximum of the head on each (with the poster)."""
    predictor = pooled(how)
    windows = predictor.encode(LONG_PLOT)
    assert len(windows) == 3
    texts = np.array([embed(predictor, w) for w in windows])
    image = predictor.embed_poster(POSTER_PIXELS)[0] if with_poster else None
    raw = pooled_by_hand(predictor, how, texts, image)
    got, count = predictor.prediction(LONG_PLOT, POSTER_PIXELS if with_poster else None)
    assert count == 3
    np.testing.assert_allclose(got, blended(predictor, raw, LONG_PLOT, with_poster), atol=HEAD_ONLY)
    # the windows differ, so the three poolings do too (the test above can tell them apart)
    others = [pooled_by_hand(predictor, other, texts, image) for other in rules.POOLS if other != how]
    assert all(np.abs(raw - o).max() > 1e-3 for o in others)


def test_batched_windows_equal_one_plot_at_a_time(pooled):
    """embed_plots batches the windows of short and long plots together: each plot's window embeddings, and
    the pooled probabilities, are what one plot at a time gives (within the batched encoder's tolerance)."""
    plots = [PLOTS[0], LONG_PLOT, words(255), PLOTS[3], words(700), "A heist.", words(254)]
    for how in ("mean_embedding", "max_probability"):
        predictor = pooled(how)
        assert predictor.text_batchable
        batched = predictor.embed_plots(plots, batch=16)
        alone = [predictor.embed_plot(p) for p in plots]
        assert [len(b) for b in batched] == [len(a) for a in alone] == [1, 3, 2, 1, 4, 1, 1]
        assert max(np.abs(b - a).max() for b, a in zip(batched, alone)) <= BATCHED_ENCODER
        image = np.zeros((len(plots), predictor.image_dim), np.float32)
        probs = predictor.combine_windows(batched, image, np.zeros(len(plots)), batch=16, plots=plots)
        want = np.array([predictor.probabilities(p) for p in plots])
        assert np.abs(probs - want).max() <= BATCHED_ENCODER


class Recording:
    """A text encoder session that records every window it runs (its ids, padding left out)."""

    def __init__(self, session):
        self.session, self.windows = session, []

    def run(self, outputs, feeds):
        for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"]):
            self.windows.append(tuple(ids[mask == 1].tolist()))
        return self.session.run(outputs, feeds)


def spans_by_hand(predictor: GenrePredictor, plot: str, max_chars: int = 20_000) -> list[tuple[int, int]]:
    """Sentence i's text tokens [n(i), n(i + 1)): n(i) the token count of the sentences before it, joined and
    cut to max_chars, less the two special tokens."""
    parts = predictor.sentences(plot)
    n = [len(predictor.tokenizer.encode("".join(parts[:i])[:max_chars]).ids) - 2 for i in range(len(parts) + 1)]
    return list(zip(n, n[1:]))


def without_by_hand(ids: list[int], start: int, end: int) -> dict[int, list[int]]:
    """{window: its ids without text tokens start..end-1}, for the windows that held any of them."""
    body = ids[1:-1]
    out = {}
    for k, s in enumerate(starts_by_hand(len(body))):
        kept = [t for j, t in enumerate(body[s : s + 254], s) if not start <= j < end]
        if len(kept) < len(body[s : s + 254]):
            out[k] = [ids[0], *kept, ids[-1]]
    return out


def test_a_sentence_reruns_only_the_windows_it_is_in(shipped, monkeypatch):
    """The explanation runs the plot's three windows once, then for each sentence only the windows that held
    its tokens, without them: a sentence of the last window alone re-runs that window and reuses the other
    two windows' embeddings. The spans are the sentences' own tokens."""
    recording = Recording(shipped.text)
    monkeypatch.setattr(shipped, "text", recording)
    result = sentence_importance(shipped, LONG_PLOT, batch=8)
    ids = shipped.token_ids(LONG_PLOT)
    spans = spans_by_hand(shipped, LONG_PLOT)
    for part, (a, b) in zip(shipped.sentences(LONG_PLOT), spans):  # each span holds its sentence's tokens
        assert ids[1 + a : 1 + b] == shipped.tokenizer.encode(part.strip()).ids[1:-1]
    want = [tuple(w) for w in shipped.encode(LONG_PLOT)]
    for a, b in spans:
        want += [tuple(w) for w in without_by_hand(ids, a, b).values()]
    assert sorted(recording.windows) == sorted(want)
    last_only = [i for i, (a, b) in enumerate(spans) if a >= 190 + 254]  # past the second window's end
    assert len(last_only) >= 6 and all(list(without_by_hand(ids, *spans[i])) == [2] for i in last_only)
    assert len(recording.windows) == 3 + sum(len(without_by_hand(ids, a, b)) for a, b in spans) < 3 * (1 + len(spans))
    assert all(max(abs(d) for d in result[i]["drop"].values()) > 0 for i in last_only)


@pytest.mark.parametrize(
    "how, with_poster, batch",
    [("mean_embedding", False, 1), ("mean_probability", False, 8), ("max_probability", True, 8)],
)
def test_sentence_drops_are_the_windows_without_it_by_hand(pooled, how, with_poster, batch):
    """Each sentence's drop: the pooled probability of the plot's windows minus that of the same windows with
    the sentence's tokens left out of those that held them (the others as they were), all by hand."""
    predictor = pooled(how)
    ids = predictor.token_ids(LONG_PLOT)
    image = predictor.embed_poster(POSTER_PIXELS)[0] if with_poster else None
    whole = np.array([embed(predictor, w) for w in predictor.encode(LONG_PLOT)])
    full = blended(predictor, pooled_by_hand(predictor, how, whole, image), LONG_PLOT, with_poster)
    got = sentence_importance(predictor, LONG_PLOT, POSTER_PIXELS if with_poster else None, batch)
    parts = predictor.sentences(LONG_PLOT)
    assert [g["sentence"] for g in got] == parts
    for s, (g, (a, b)) in enumerate(zip(got, spans_by_hand(predictor, LONG_PLOT))):
        texts = whole.copy()
        for k, window in without_by_hand(ids, a, b).items():
            texts[k] = embed(predictor, window)
        left = "".join(parts[:s] + parts[s + 1 :])  # the bag reads the plot without the sentence
        without = blended(predictor, pooled_by_hand(predictor, how, texts, image), left, with_poster)
        bound = sum(
            through_the_blend(predictor, [(t, with_poster)], p[None], BATCHED_ENCODER)[0]
            for t, p in ((LONG_PLOT, full), (left, without))
        )
        assert (np.abs(np.array(list(g["drop"].values())) - (full - without)) <= bound).all()


def test_sentences_past_max_chars_drop_exactly_zero_without_a_run(tmp_path, monkeypatch):
    """With max_chars 300, the sentences past the cut hold no token: drop exactly 0, and no window is run for
    them; the sentence the cut goes through keeps its tokens before the cut. One sentence: NaN, as before."""
    models = models_with(tmp_path / "models", lambda spec: pinned(spec, max_chars=300), COMMITTED)
    predictor = GenrePredictor(models)
    recording = Recording(predictor.text)
    monkeypatch.setattr(predictor, "text", recording)
    result = sentence_importance(predictor, LONG_PLOT)
    spans = spans_by_hand(predictor, LONG_PLOT, max_chars=300)
    empty = [i for i, (a, b) in enumerate(spans) if a == b]
    assert len(empty) == len(result) - 4  # 300 characters: the first three sentences and part of the fourth
    assert all(d == 0.0 for i in empty for d in result[i]["drop"].values())
    assert all(any(d != 0 for d in result[i]["drop"].values()) for i in range(4))
    assert len(recording.windows) == 1 + 4  # the cut plot's one window, then one per sentence in it
    alone = sentence_importance(predictor, "A heist goes wrong in the city")
    assert len(alone) == 1 and all(np.isnan(d) for d in alone[0]["drop"].values())


def test_a_long_plot_is_explained_by_passages_within_the_budget(monkeypatch):
    """With the shipped explanation budget, leaving each of the 3-window plot's 36 sentences out alone would
    re-run more token ids than rules.explanation.max_tokens: consecutive sentences are left out together, as
    rules.passages plans them from the sentences' token spans. The re-runs stay within the budget; each passage's
    drop, given to each of its sentences, is the windows without the passage's tokens, by hand."""
    predictor = GenrePredictor(COMMITTED)
    rule, budget = predictor.rules["windows"], predictor.rules["explanation"]["max_tokens"]
    ids = predictor.token_ids(LONG_PLOT)
    spans = spans_by_hand(predictor, LONG_PLOT)
    ends = [0] + [b for _, b in spans]
    assert sum(rules.rerun_tokens(len(ids), rule, a, b) for a, b in spans) > budget  # alone: over the budget
    plan = rules.passages(ends, len(ids), rule, budget)
    assert 2 < len(plan) < len(spans)
    recording = Recording(predictor.text)
    monkeypatch.setattr(predictor, "text", recording)
    got = sentence_importance(predictor, LONG_PLOT)
    runs = list(recording.windows)  # before the by-hand runs below
    whole = np.array([embed(predictor, w) for w in predictor.encode(LONG_PLOT)])
    assert runs[: len(whole)] == [tuple(w) for w in predictor.encode(LONG_PLOT)]
    assert sum(len(w) for w in runs[len(whole) :]) <= budget
    full = blended(predictor, pooled_by_hand(predictor, rule["pool"], whole), LONG_PLOT)
    parts = predictor.sentences(LONG_PLOT)
    for g, (i, j) in enumerate(plan):
        texts = whole.copy()
        for k, window in rules.windows_without(ids, rule, ends[i], ends[j]).items():
            texts[k] = embed(predictor, window)
        left = "".join(parts[:i] + parts[j:])  # the bag reads the plot without the passage
        without = blended(predictor, pooled_by_hand(predictor, rule["pool"], texts), left)
        bound = sum(
            through_the_blend(predictor, [(t, "")], p[None], BATCHED_ENCODER)[0]
            for t, p in ((LONG_PLOT, full), (left, without))
        )
        for sentence in got[i:j]:
            assert sentence["passage"] == g
            assert (np.abs(np.array(list(sentence["drop"].values())) - (full - without)) <= bound).all()


@pytest.mark.parametrize("stride", [190, 254])
@pytest.mark.parametrize("n_ids", [9, 256, 400, 1000, 4000])
def test_rerun_tokens_counts_what_windows_without_reruns(stride, n_ids):
    """rerun_tokens, which the passage plan sums, is the number of ids windows_without builds, for every span."""
    rule = {**rules.RULES["windows"], "stride": stride}
    ids = list(range(n_ids))
    spans = [(a, b) for a in range(0, n_ids - 2, max(1, n_ids // 23)) for b in (a, a + 1, a + 7, a + 300, n_ids - 2)]
    for a, b in spans:
        b = min(b, n_ids - 2)
        want = sum(len(w) for w in rules.windows_without(ids, rule, a, b).values())
        assert rules.rerun_tokens(n_ids, rule, a, b) == want, (a, b)


def plan_cost(plan, ends, n_ids, rule):
    return sum(rules.rerun_tokens(n_ids, rule, ends[i], ends[j]) for i, j in plan)


def test_passages_by_hand():
    """One window of 4 sentences of 10 tokens (42 ids): alone, each re-runs 32 ids, 128 in all. Within 128: each
    alone. Within 100: k = 3 runs by start token (0, 0, 1, 2: the first two together), 22 + 32 + 32 = 86 ids.
    Within 60: k = 3 is over, k = 2 (0, 0, 1, 1) re-runs 22 + 22 = 44. Within 10: nothing fits, k = 2."""
    rule, ends = rules.RULES["windows"], [0, 10, 20, 30, 40]
    assert rules.passages(ends, 42, rule, 128) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert rules.passages(ends, 42, rule, 100) == [(0, 2), (2, 3), (3, 4)]
    assert rules.passages(ends, 42, rule, 60) == rules.passages(ends, 42, rule, 10) == [(0, 2), (2, 4)]
    assert rules.passages([0, 10, 20], 22, rule, 1) == [(0, 1), (1, 2)]  # two sentences: always alone
    # 600 text tokens at stride 190: windows at 0, 190, 346. Tokens 200..299 are in the first (54 of them: 202
    # ids left) and the second (100: 156 left); tokens 0..99 in the first only
    rule = {**rule, "stride": 190}
    assert rules.rerun_tokens(602, rule, 200, 300) == 202 + 156
    assert rules.rerun_tokens(602, rule, 0, 100) == 156 and rules.rerun_tokens(602, rule, 5, 5) == 0


@pytest.mark.parametrize("seed", range(12))
def test_passages_cover_every_sentence_within_the_budget(seed):
    """Random sentence lengths and budgets: the passages cover the sentences in order, each once; each sentence
    is alone when that fits the budget; otherwise the plan re-runs at most the budget, unless it is the last
    resort of two passages; a passage never holds more tokens than a k-th of the text and one sentence."""
    rng = np.random.default_rng(seed)
    rule = {**rules.RULES["windows"], "stride": int(rng.choice([190, 254]))}
    m = int(rng.integers(1, 60))
    lengths = rng.integers(0, 40, m)  # a sentence of 0 tokens happens
    ends = [0, *np.cumsum(lengths).tolist()]
    n_ids = ends[-1] + 2
    budget = int(rng.integers(1, 6000))
    plan = rules.passages(ends, n_ids, rule, budget)
    assert [i for i, j in plan for i in range(i, j)] == list(range(m))  # every sentence once, in order
    alone = [(i, i + 1) for i in range(m)]
    if m < 3 or plan_cost(alone, ends, n_ids, rule) <= budget:
        assert plan == alone
        return
    assert 2 <= len(plan) <= m - 1
    assert len(plan) == 2 or plan_cost(plan, ends, n_ids, rule) <= budget
    assert all(ends[j] - ends[i] <= ends[-1] / len(plan) + max(lengths) for i, j in plan)
