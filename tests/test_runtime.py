"""The runtime (pipeline/runtime): what `predict` and `serve` import, in a fresh interpreter; the manifest's
one schema (assets/js/manifest_schema.json) read alike by Python (pipeline/runtime/manifest.py) and the
browser's JavaScript (assets/js/models.js, run by node), and agreeing with a standard JSON Schema
validator (ajv); the packed weights rebuilt at load, bit for bit the formula the format defines."""

import copy
import json
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pipeline.export import packing
from pipeline.runtime import manifest, packed_weights, rules
from tests.conftest import ROOT

COMMITTED = ROOT / "assets/models"
FORBIDDEN = ("torch", "torchvision", "transformers", "onnx", "sklearn", "pandas", "scipy")
# third-party packages the runtime may load: its own four, tqdm on a terminal, flask (serve) and what
# flask imports; _distutils_hack is setuptools' start-up hook in a virtual environment
ALLOWED = {"numpy", "onnxruntime", "tokenizers", "PIL", "tqdm", "flask", "_distutils_hack"}
ALLOWED |= {"werkzeug", "jinja2", "markupsafe", "itsdangerous", "click", "blinker"}

REPORT = """
import json, sys
site = sorted(m for m, mod in list(sys.modules.items())
              if "." not in m and "-packages" in str(getattr(mod, "__file__", None) or ""))
print(json.dumps({"third_party": site, "loaded": sorted(m for m in sys.modules if "." not in m),
                  "modules": sorted(sys.modules)}))
"""


def fresh(code: str) -> dict:
    """Runs `code` in a new interpreter at the repository root; what it loaded (the REPORT above)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + REPORT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_runtime_predicts_and_serves_without_the_learning_libraries(tmp_path):
    """Every runtime module imported, a one-row predict through the command line and a plot + poster
    request through serve's app: none of torch, transformers, onnx, sklearn, pandas is loaded, and no
    third-party package outside the runtime's own set."""
    src, out = tmp_path / "one.csv", tmp_path / "out.csv"
    src.write_text("overview\nA detective hunts a serial killer through a rainy city.\n")
    got = fresh(f"""
        import base64, io, sys
        from pathlib import Path
        from pipeline.runtime import csv_stream, image_io, manifest, occlusion, packed_weights, predict
        from pipeline.runtime import predictor, rules, serve
        import pipeline.__main__ as cli
        assert cli.main(["predict", {str(src)!r}, "--out", {str(out)!r}, "--workers", "1"]) == 0
        import numpy as np
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(np.full((60, 40, 3), 90, np.uint8)).save(buf, "PNG")
        client = serve.create_app(Path({str(COMMITTED)!r})).test_client()
        answer = client.post("/predict", json={{"plot": "A heist.", "poster": base64.b64encode(buf.getvalue()).decode()}})
        assert answer.status_code == 200 and answer.get_json()["mode"] == "plot+poster", answer.get_json()
        p = predictor.GenrePredictor(Path({str(COMMITTED)!r}))
        occlusion.sentence_importance(p, "A heist. A chase. A wedding.")
    """)
    assert out.read_text().count("\n") == 2  # the header and the row
    assert [m for m in FORBIDDEN if m in got["loaded"]] == []
    assert set(got["third_party"]) <= ALLOWED, set(got["third_party"]) - ALLOWED


def test_the_import_check_sees_a_learning_library():
    """The check above can fail: a module of the export layer loads onnx, and the same report shows it."""
    got = fresh("import pipeline.export.packing")
    assert "onnx" in got["loaded"] and "onnx" in got["third_party"]


def test_one_plot_starts_no_pool_and_loads_no_image_library_or_progress_bar(tmp_path):
    """`predict` of one plot with the default --workers (every core) and two: no worker pool is started
    (nor its modules imported), tqdm is not loaded when stderr is no
    terminal, flask never. What a one-plot run costs is the models, not the machinery around them."""
    src = tmp_path / "one.csv"
    src.write_text("overview,poster\nA wedding goes wrong in the city.,\n")
    for workers in ([], ["--workers", "2"]):
        out = tmp_path / f"out{len(workers)}.csv"
        got = fresh(f"""
            import pipeline.__main__ as cli
            assert cli.main(["predict", {str(src)!r}, "--out", {str(out)!r}, *{workers!r}]) == 0
        """)
        assert out.exists()
        loaded = set(got["modules"])
        assert not loaded & {"concurrent.futures.process", "multiprocessing", "tqdm", "flask"}, loaded


# ---------------------------------------------------------------------------------------------
# The manifest's schema, Python against JavaScript (and ajv).


def committed() -> dict:
    return json.loads((COMMITTED / "manifest.json").read_text())


def change(fn):
    def made():
        spec = committed()
        fn(spec)
        return spec

    return made


def pop(path: str):
    def fn(spec):
        *parents, last = path.split("/")
        node = spec
        for p in parents:
            node = node[p]
        del node[last]

    return fn


def put(path: str, value):
    def fn(spec):
        *parents, last = path.split("/")
        node = spec
        for p in parents:
            node = node[p]
        node[last] = copy.deepcopy(value)

    return fn


# name -> (manifest, what it is: "valid", "schema" (JSON Schema refuses it) or "x-check" (a relation only
# the x-checks see: JSON Schema accepts it)
CASES = {
    "committed": (committed, "valid"),
    "no fusion head weights (null)": (change(put("fusion_head/weights_file", None)), "valid"),
    "no gradcam (optional)": (change(pop("gradcam")), "valid"),
    "bytes 3.0 is an integer": (change(put("files/tokenizer.json/bytes", 352926.0)), "valid"),
    "extra keys are allowed": (change(put("text_encoder/notes", "anything")), "valid"),
    "no rules": (change(pop("rules")), "schema"),
    "no labels": (change(pop("labels")), "schema"),
    "no files": (change(pop("files")), "schema"),
    "rules without windows": (change(pop("rules/windows")), "schema"),
    "windows without stride": (change(pop("rules/windows/stride")), "schema"),
    "windows without pool": (change(pop("rules/windows/pool")), "schema"),
    "an unknown pooling": (change(put("rules/windows/pool", "attention")), "schema"),
    "stride 0": (change(put("rules/windows/stride", 0)), "schema"),
    "stride as text": (change(put("rules/windows/stride", "190")), "schema"),
    "one threshold list": (change(lambda s: s.update(thresholds=s["thresholds"]["plot"])), "schema"),
    "thresholds without plot+poster": (change(pop("thresholds/plot+poster")), "schema"),
    "a threshold as text": (change(lambda s: s["thresholds"]["plot"].__setitem__(3, "0.5")), "schema"),
    "no labels at all": (change(put("labels", [])), "schema"),
    "an empty label": (change(lambda s: s["labels"].__setitem__(0, "")), "schema"),
    "dim as text": (change(put("text_encoder/dim", "384")), "schema"),
    "dim 0": (change(put("poster_encoder/dim", 0)), "schema"),
    "batchable as 1": (change(put("text_encoder/batchable", 1)), "schema"),
    "unknown optimization level": (change(put("fusion_head/web_optimization", "max")), "schema"),
    "input type float16": (change(put("poster_encoder/input_type", "float16")), "schema"),
    "text encoder without tokenizer": (change(pop("text_encoder/tokenizer")), "schema"),
    "model without file": (change(pop("fusion_head/file")), "schema"),
    "graph in a folder": (change(put("poster_encoder/file", "../poster_encoder.onnx")), "schema"),
    "file listed in a folder": (
        change(lambda s: s["files"].update({"sub/x.onnx": s["files"]["fusion_head.onnx"]})),
        "schema",
    ),
    "sha256 in capitals": (change(lambda s: s["files"]["fusion_head.onnx"].update(sha256="A" * 64)), "schema"),
    "sha256 too short": (change(lambda s: s["files"]["fusion_head.onnx"].update(sha256="0" * 63)), "schema"),
    "file without sha256": (change(pop("files/text_encoder.weights/sha256")), "schema"),
    "bytes 1.5": (change(put("files/tokenizer.json/bytes", 1.5)), "schema"),
    "bytes negative": (change(put("files/tokenizer.json/bytes", -1)), "schema"),
    "max_side 0": (change(put("rules/poster/max_side", 0)), "schema"),
    "min_words negative": (change(put("min_words", -1)), "schema"),
    "bag weight over 1": (change(put("bag_of_words/blend/plot", 1.5)), "schema"),
    "bag weight negative": (change(put("bag_of_words/blend/plot+poster", -0.1)), "schema"),
    "bag weight 1 (the bag alone)": (change(put("bag_of_words/blend/plot", 1)), "valid"),
    "gradcam without features": (change(pop("gradcam/features")), "schema"),
    "manifest is a list": (lambda: [committed()], "schema"),
    "tokenizer not in files": (change(put("text_encoder/tokenizer", "other.json")), "x-check"),
    "weights file not in files": (change(pop("files/text_encoder.weights")), "x-check"),
    "gradcam names a file not listed": (change(put("gradcam/jacobian/file", "head.onnx")), "x-check"),
    "17 thresholds for 18 labels": (change(lambda s: s["thresholds"]["plot"].pop()), "x-check"),
    "a label more than thresholds": (change(lambda s: s["labels"].append("Musical")), "x-check"),
    "weights file named otherwise": (change(put("fusion_head/weights_file", "head.weights")), "x-check"),
}

NODE = """
import * as models from %(models)s;
import Ajv2020 from %(ajv)s;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const ajv = new Ajv2020({ strict: true, strictRequired: false });
ajv.addKeyword("x-checks");
const standard = ajv.compile(models.schema);
const out = JSON.parse(input).map((m) => ({ problem: models.manifestProblem(m), ajv: standard(m) }));
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def javascript():
    """{case: {"problem": models.js's message or null, "ajv": whether ajv accepts it}}."""
    node = shutil.which("node")
    assert node is not None, "node is not installed (make test installs it): the browser's reader cannot be run"
    ajv = ROOT / "node_modules/ajv/dist/2020.js"
    assert ajv.exists(), "node_modules/ajv is missing (npm ci installs it, with html-validate)"
    src = NODE % {"models": json.dumps((ROOT / "assets/js/models.js").as_uri()), "ajv": json.dumps(ajv.as_uri())}
    payload = json.dumps([make() for make, _ in CASES.values()])
    proc = subprocess.run(
        [node, "--input-type=module", "-e", src], input=payload, capture_output=True, text=True, check=True
    )
    return dict(zip(CASES, json.loads(proc.stdout)))


@pytest.mark.parametrize("name", CASES)
def test_python_and_javascript_read_the_manifest_alike(javascript, name):
    """Both readers give the same answer, word for word: None for a good manifest, else the same first problem."""
    make, kind = CASES[name]
    problem = manifest.problem(make())
    assert problem == javascript[name]["problem"]
    assert (problem is None) == (kind == "valid"), problem


@pytest.mark.parametrize("name", CASES)
def test_the_schema_is_json_schema_that_ajv_reads_alike(javascript, name):
    """ajv (a standard validator, draft 2020-12, strict) accepts what the schema part accepts: the two
    readers implement the subset they claim to, and the schema file says what it means."""
    _, kind = CASES[name]
    assert javascript[name]["ajv"] == (kind != "schema")


def test_modes_and_rule_keys_are_the_schemas():
    schema = json.loads((ROOT / "assets/js/manifest_schema.json").read_text())
    assert manifest.MODES == ("plot", "plot+poster") == tuple(schema["properties"]["thresholds"]["required"])
    assert manifest.RULE_KEYS == tuple(schema["properties"]["rules"]["required"])
    # the poolings the schema lets through are the ones pipeline/runtime/rules.py (and rules.js) implement
    assert tuple(schema["$defs"]["windows"]["properties"]["pool"]["enum"]) == rules.POOLS


def test_the_python_reader_follows_the_schema_file(monkeypatch):
    """A key the schema requires is required, though no Python code names it: the reader reads the data."""
    changed = json.loads((ROOT / "assets/js/manifest_schema.json").read_text())
    changed["required"].append("provenance")
    monkeypatch.setattr(manifest, "schema", lambda: changed)
    assert manifest.problem(committed()) == "has no provenance"


def linked(folder, spec: dict):
    """A models folder: the committed files linked, `spec` as its manifest."""
    folder.mkdir()
    for name in spec["files"]:
        (folder / name).symlink_to(COMMITTED / name)
    (folder / "manifest.json").write_text(json.dumps(spec))
    return folder


# rules.windows that pass the schema but that the runtime cannot apply as written: (change, what the message says)
WINDOWS = {
    "stride over the window": (put("rules/windows/stride", 255), "stride 255 is over a window's 254 text tokens"),
    "max_len not the encoder's": (put("rules/windows/max_len", 128), "max_len 128 is not text_encoder.max_len 256"),
    "encoder max_len not the windows'": (
        put("text_encoder/max_len", 512),
        "max_len 256 is not text_encoder.max_len 512",
    ),
    "stride 1.5": (put("rules/windows/stride", 1.5), "rules.windows.stride must be an integer"),
}


@pytest.mark.parametrize("name", WINDOWS)
def test_windows_the_runtime_cannot_apply_are_refused_in_one_line(tmp_path, name):
    """check_models refuses them (ModelsMissing: predict and serve exit 2 with its one line), naming the key."""
    fn, message = WINDOWS[name]
    spec = committed()
    fn(spec)
    with pytest.raises(manifest.ModelsMissing, match=re.escape(message)) as e:
        manifest.check_models(linked(tmp_path / "models", spec))
    assert "\n" not in str(e.value) and "make pipeline" in str(e.value)


@pytest.mark.parametrize("stride", [1, 190, 254])
@pytest.mark.parametrize("pool", ["mean_embedding", "mean_probability", "max_probability"])
def test_every_stride_up_to_the_window_and_every_pooling_pass(tmp_path, stride, pool):
    spec = committed()
    spec["rules"]["windows"].update(stride=stride, pool=pool)
    assert manifest.check_models(linked(tmp_path / "models", spec))["rules"]["windows"]["pool"] == pool


def test_the_committed_models_pass_every_check():
    spec = manifest.check_models(COMMITTED)
    assert spec["labels"] and set(spec["files"]) >= {spec["text_encoder"]["file"], spec["fusion_head"]["file"]}


def test_the_exported_manifest_passes_the_schema(tiny):
    """What export writes (the tiny run) passes the schema and every file matches its sha256."""
    assert manifest.check_models(tiny.models)["labels"]


@pytest.mark.parametrize("text", ["{", '{"labels": NaN}', b"\xff\xfe"], ids=["truncated", "nan", "not-utf8"])
def test_a_manifest_that_is_not_json_is_refused_in_one_line(tmp_path, text):
    (tmp_path / "manifest.json").write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(manifest.ModelsMissing, match="is not JSON") as e:
        manifest.check_models(tmp_path)
    assert "\n" not in str(e.value) and "make pipeline" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Packed weights: the rebuild at load (whole blocks broadcast, edge blocks repeated) is the format's formula.


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize(
    "shape, block", [((64, 96), (32, 1)), ((70, 50), (32, 1)), ((33, 130), (1, 64)), ((9, 7), (4, 3))]
)
def test_rebuilt_weights_are_the_formula_bit_for_bit(bits, shape, block):
    """float32(q) * float32(scale of its block), one rounding per weight, for whole and edge blocks, 4- and
    8-bit integers (nibbles sign-extended), f16 and f32 scales."""
    rng = np.random.default_rng(bits * 1000 + shape[0])
    w = rng.normal(0, 1, shape).astype(np.float32)
    for scale in ("f16", "f32"):
        q, s = packing.quantize(w, bits, block, scale)
        raw = packing.nibbles(q) if bits == 4 else q.tobytes()
        got = packed_weights.unnibble(raw, q.size).reshape(shape) if bits == 4 else q
        assert np.array_equal(got, q)
        want = (
            q.astype(np.float32)
            * np.repeat(np.repeat(s.astype(np.float32), block[0], 0), block[1], 1)[: shape[0], : shape[1]]
        )
        rebuilt = packed_weights.dequantize(got, s, block)
        assert rebuilt.dtype == np.float32 and np.array_equal(rebuilt.view(np.uint32), want.view(np.uint32))


def test_onnxruntime_keeps_its_own_copy_of_the_rebuilt_weights():
    """predictor.session hands the rebuilt float weights over and keeps no reference: onnxruntime copies
    them (its documentation says the buffer may be freed once the session exists). Checked, not assumed:
    the buffer overwritten after the session is made changes nothing it computes."""
    from pipeline.runtime import predictor

    spec = committed()
    for part in ("fusion_head", "text_encoder"):
        entry = spec[part]
        external = packed_weights.external_data((COMMITTED / entry["weights_file"]).read_bytes())
        s = predictor.session((COMMITTED / entry["file"]).read_bytes(), 1, external)
        if part == "fusion_head":
            feeds = {
                "text": np.ones((1, spec["text_encoder"]["dim"]), np.float32),
                "image": np.ones((1, spec["poster_encoder"]["dim"]), np.float32),
                "has_poster": np.ones((1, 1), np.float32),
            }
        else:
            ids = np.arange(101, 141, dtype=np.int64)[None]
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        before = s.run([entry["output"]], feeds)[0]
        external[1][:] = 0xFF  # NaN everywhere, were onnxruntime still reading it
        assert np.array_equal(s.run([entry["output"]], feeds)[0], before)
