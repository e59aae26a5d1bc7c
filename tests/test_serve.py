"""`python -m pipeline serve`: the API's answers, every kind of bad request, per-mode thresholds, the
bound on concurrent inference (503 + Retry-After), and a real server under load and under a flood."""

import base64
import io
import json
import logging
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import pytest
import requests
from PIL import Image
from werkzeug.serving import make_server

from bench.serve import Server, bomb_png, flood
from pipeline.runtime.image_io import load_image
from pipeline.runtime.manifest import ModelsChanged
from pipeline.runtime.predict import GenrePredictor, ModelsMissing
from pipeline.runtime.serve import create_app
from tests.conftest import ROOT, cli
from tests.test_predict import CHANGED_FILES, COMMITTED, LONG_PLOT, copied_models, models_with, poster_matters

PLOTS = [
    "A detective hunts a serial killer through the rain-soaked streets of a corrupt city.",
    "Two mismatched roommates plan a wedding that goes hilariously wrong.",
    "A young wizard and her dragon set out on a quest to save their kingdom.",
    "Astronauts stranded on a dying space station fight to get home before the air runs out.",
]


def png(seed: int, size=(48, 72)) -> bytes:
    """A small noisy poster, different per seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


POSTER, POSTER2 = png(1), png(2)
BOMB = bomb_png(30_000, 30_000)  # 900 megapixels claimed in a few hundred bytes


@pytest.fixture(scope="module")
def models(tiny, tmp_path_factory):
    """The tiny run's models, as `serve` reads them."""
    return models_with(tmp_path_factory.mktemp("serve") / "models", lambda spec: None, tiny.models)


@pytest.fixture(scope="module")
def app(models):
    return create_app(models, wait=60)  # requests queue for a slot rather than get 503 (tested on its own below)


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def labels(client):
    return client.get("/healthz").get_json()["labels"]


def check(body: dict, labels: list[str], poster_used: bool) -> dict:
    """Asserts a /predict answer is well formed; returns its probabilities."""
    assert set(body) == {"genres", "probabilities", "top", "poster_used", "mode", "windows", "ms"}
    assert isinstance(body["windows"], int) and body["windows"] >= 1
    assert body["mode"] == ("plot+poster" if poster_used else "plot")
    assert body["genres"] and set(body["genres"]) <= set(labels)
    probs = body["probabilities"]
    assert list(probs) == labels and all(0 <= p <= 1 for p in probs.values())
    top = [(t["genre"], t["probability"]) for t in body["top"]]
    assert top == sorted(probs.items(), key=lambda kv: kv[1], reverse=True)[:3]
    assert body["poster_used"] is poster_used and body["ms"] >= 0
    return probs


def diff(a: dict, b: dict) -> float:
    return max(abs(a[g] - b[g]) for g in a)


def test_healthz_reveals_no_paths(client, models):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.is_json
    body = r.get_json()
    assert body["status"] == "ok" and body["modes"] == ["plot", "plot+poster"]
    assert body["labels"] and all(isinstance(g, str) for g in body["labels"])
    text = r.get_data(as_text=True)
    assert str(models) not in text and str(ROOT) not in text and "/" not in text and ".onnx" not in text


def test_json_plot_only(client, labels):
    r = client.post("/predict", json={"plot": PLOTS[0]})
    assert r.status_code == 200, r.get_json()
    check(r.get_json(), labels, poster_used=False)


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
def test_json_with_poster(client, models, labels, prefix):
    plain = check(client.post("/predict", json={"plot": PLOTS[0]}).get_json(), labels, poster_used=False)
    r = client.post("/predict", json={"plot": PLOTS[0], "poster": prefix + b64(POSTER)})
    assert r.status_code == 200, r.get_json()
    change = diff(check(r.get_json(), labels, poster_used=True), plain)
    assert change > 1e-4 if poster_matters(json.loads((models / "manifest.json").read_text())) else change == 0


@pytest.mark.parametrize("poster", [None, POSTER, b""], ids=["no-file", "file", "empty-file-part"])
def test_form(client, labels, poster):
    data = {"plot": PLOTS[1]}
    if poster is not None:  # b"": what a browser sends when no file is chosen
        data["poster"] = (io.BytesIO(poster), "poster.png" if poster else "")
    r = client.post("/predict", data=data, content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    probs = check(r.get_json(), labels, poster_used=bool(poster))
    same = {"plot": PLOTS[1], **({"poster": b64(poster)} if poster else {})}
    assert diff(probs, client.post("/predict", json=same).get_json()["probabilities"]) < 1e-6


def upload(data: bytes) -> dict:
    """Test-client arguments for a form with a poster file (a fresh stream each time: posting reads it)."""
    return {
        "data": {"plot": PLOTS[0], "poster": (io.BytesIO(data), "poster.png")},
        "content_type": "multipart/form-data",
    }


def post(client, request_kwargs: dict):
    if "upload" in request_kwargs:
        request_kwargs = upload(request_kwargs["upload"])
    return client.post("/predict", **request_kwargs)


ERRORS = {
    "malformed-json": ({"data": '{"plot": "a heist', "content_type": "application/json"}, "not valid JSON"),
    "json-not-object": ({"json": [PLOTS[0]]}, "must be an object"),
    "not-json-nor-form": ({"data": PLOTS[0], "content_type": "text/plain"}, "send JSON"),
    "no-body": ({}, "send JSON"),
    "missing-plot": ({"json": {"poster": b64(POSTER)}}, "missing 'plot'"),
    "missing-plot-form": ({"data": {"title": "x"}, "content_type": "multipart/form-data"}, "missing 'plot'"),
    "plot-number": ({"json": {"plot": 42}}, "must be a string"),
    "plot-list": ({"json": {"plot": [PLOTS[0]]}}, "must be a string"),
    "plot-empty": ({"json": {"plot": ""}}, "'plot' is empty"),
    "plot-whitespace": ({"json": {"plot": " \n\t "}}, "'plot' is empty"),
    "plot-whitespace-form": ({"data": {"plot": "   "}}, "'plot' is empty"),
    "poster-not-string": ({"json": {"plot": PLOTS[0], "poster": 42}}, "must be a base64 string"),
    "poster-bad-chars": ({"json": {"plot": PLOTS[0], "poster": "not base64!!"}}, "not valid base64"),
    "poster-bad-padding": ({"json": {"plot": PLOTS[0], "poster": "abcde"}}, "not valid base64"),
    "poster-data-url-not-b64": ({"json": {"plot": PLOTS[0], "poster": "data:image/png,abc"}}, "base64-encoded"),
    "poster-not-image": ({"json": {"plot": PLOTS[0], "poster": b64(b"hello, no pixels here")}}, "not a usable image"),
    "upload-not-image": ({"upload": b"just some text"}, "not a usable image"),
    "upload-empty-named": ({"upload": b""}, "not a usable image"),
    "poster-pixel-bomb": ({"json": {"plot": PLOTS[0], "poster": b64(BOMB)}}, "megapixel limit"),
    "upload-pixel-bomb": ({"upload": BOMB}, "megapixel limit"),
}


@pytest.mark.parametrize("request_kwargs, message", ERRORS.values(), ids=ERRORS.keys())
def test_bad_requests_get_400_json(client, request_kwargs, message):
    r = post(client, request_kwargs)
    assert r.status_code == 400 and r.is_json
    assert message in r.get_json()["error"]


def test_body_over_the_limit_is_413_json(models, labels):
    small = create_app(models, max_body_mb=0.01).test_client()  # ~10 KB
    for kwargs in ({"json": {"plot": "word " * 5000}}, upload(png(3, size=(200, 300)))):
        r = small.post("/predict", **kwargs)
        assert r.status_code == 413 and r.is_json
        assert "0.01 MB limit" in r.get_json()["error"]
    check(small.post("/predict", json={"plot": PLOTS[0]}).get_json(), labels, poster_used=False)


@pytest.mark.parametrize(
    "method, path, status", [("get", "/nope", 404), ("get", "/predict", 405), ("post", "/healthz", 405)]
)
def test_unknown_routes_and_methods_are_json(client, method, path, status):
    r = getattr(client, method)(path)
    assert r.status_code == status and r.is_json and r.get_json()["error"]
    if status == 405:
        assert "Allow" in r.headers


def test_unexpected_exception_is_500_json_and_logged(app, client, labels, monkeypatch, caplog):
    def boom(*args):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(app.extensions["genre_predictor"], "prediction", boom)
    r = client.post("/predict", json={"plot": PLOTS[0]})
    assert r.status_code == 500 and "RuntimeError" in r.get_json()["error"]
    assert "model exploded" in caplog.text
    monkeypatch.undo()
    check(client.post("/predict", json={"plot": PLOTS[0]}).get_json(), labels, poster_used=False)


def test_still_serves_after_errors(client, labels):
    for request_kwargs, _ in ERRORS.values():
        assert post(client, request_kwargs).status_code == 400
    check(client.post("/predict", json={"plot": PLOTS[2]}).get_json(), labels, poster_used=False)


def test_api_matches_the_predictor(client, models):
    predictor = GenrePredictor(models)
    for plot, poster in [(PLOTS[0], None), (PLOTS[3], POSTER)]:
        want = predictor.probabilities(plot, None if poster is None else load_image(poster))
        body = client.post("/predict", json={"plot": plot, **({"poster": b64(poster)} if poster else {})}).get_json()
        assert np.abs(np.array(list(body["probabilities"].values())) - want).max() < 1e-6
        assert body["genres"] == predictor.decide(want, "plot+poster" if poster else "plot")


def test_a_long_plot_is_read_whole_and_says_in_how_many_windows(tmp_path):
    """The shipped models: a plot of three windows (test_predict.LONG_PLOT) answers windows 3 and the
    predictor's probabilities (every window pooled); a short plot, windows 1."""
    client = create_app(COMMITTED).test_client()
    predictor = GenrePredictor(COMMITTED)
    for plot, windows in [(LONG_PLOT, 3), (PLOTS[0], 1)]:
        body = client.post("/predict", json={"plot": plot}).get_json()
        assert body["windows"] == windows == len(predictor.encode(plot))
        assert np.abs(np.array(list(body["probabilities"].values())) - predictor.probabilities(plot)).max() < 1e-6


@pytest.fixture(scope="module")
def server(app):
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)  # no access-log line per request
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.port}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)
    werkzeug_log.setLevel(level)


def test_real_server_under_concurrent_load(app, server, labels):
    requests_total, clients, deadline = 500, 8, 240
    payloads = [("json", p, None) for p in PLOTS] + [("form", p, None) for p in PLOTS]
    payloads += [("json", PLOTS[0], POSTER), ("form", PLOTS[2], POSTER2)]  # one request in five has a poster
    predictor = app.extensions["genre_predictor"]
    expected = [predictor.probabilities(plot, poster and load_image(poster)) for _, plot, poster in payloads]

    def send(i: int):
        kind, plot, poster = payloads[i % len(payloads)]
        start = time.perf_counter()
        if kind == "json":
            r = requests.post(
                f"{server}/predict", json={"plot": plot, **({"poster": b64(poster)} if poster else {})}, timeout=30
            )
        else:
            files = {"poster": ("poster.png", poster, "image/png")} if poster else None
            r = requests.post(f"{server}/predict", data={"plot": plot}, files=files, timeout=30)
        return i, (time.perf_counter() - start) * 1000, r.status_code, r.json()

    pool = ThreadPoolExecutor(clients)
    errors, latencies = [], []
    start = time.perf_counter()
    try:
        for future in as_completed([pool.submit(send, i) for i in range(requests_total)], timeout=deadline):
            try:
                i, ms, status, body = future.result()
                assert status == 200, body
                probs = check(body, labels, poster_used=payloads[i % len(payloads)][2] is not None)
                assert np.abs(np.array(list(probs.values())) - expected[i % len(payloads)]).max() < 1e-6
                latencies.append(ms)
            except Exception as e:  # collect, so one report shows them all
                errors.append(repr(e)[:300])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    print(
        f"\nserve load: {len(latencies)}/{requests_total} ok from {clients} clients in {elapsed:.1f} s: "
        f"{requests_total / elapsed:.1f} req/s, p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms"
    )
    assert not errors, f"{len(errors)} errors, first: {errors[:3]}"
    assert len(latencies) == requests_total


def test_each_request_uses_its_modes_thresholds(tmp_path, tiny, labels):
    """A plot alone is decided by the "plot" thresholds, a plot with a poster by "plot+poster"."""
    n = len(labels)

    def change(spec):  # "plot": nothing passes (so the single most probable genre); "plot+poster": everything
        spec["thresholds"] = {"plot": [1.01] * n, "plot+poster": [0.0] * n}

    client = create_app(models_with(tmp_path / "models", change, tiny.models)).test_client()
    plot_only = client.post("/predict", json={"plot": PLOTS[0]}).get_json()
    with_poster = client.post("/predict", json={"plot": PLOTS[0], "poster": b64(POSTER)}).get_json()
    assert (plot_only["mode"], with_poster["mode"]) == ("plot", "plot+poster")
    assert [len(plot_only["genres"]), len(with_poster["genres"])] == [1, n]


def test_models_without_rules_are_refused_at_start(tmp_path, tiny):
    """A manifest from before the shared rules: create_app refuses it, and `serve` exits 2 with one line
    naming `python -m pipeline export` (no traceback, nothing served)."""
    models = models_with(tmp_path / "models", lambda spec: spec.pop("rules"), tiny.models)
    with pytest.raises(ModelsMissing, match="has no rules"):
        create_app(models)
    proc = cli("serve", "--port", "0", "--models", models, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "has no rules" in proc.stderr and "python -m pipeline export" in proc.stderr


@pytest.mark.parametrize("name", CHANGED_FILES)
def test_a_model_file_that_differs_from_the_manifest_stops_the_server_at_start(tmp_path, name):
    """One byte of a copied models folder flipped: create_app raises ModelsChanged naming the file, and
    `serve` exits 2 with one line naming the file and the command that rebuilds it, serving nothing.
    The poster encoder too, though a plot-only request would never load it."""
    models = copied_models(tmp_path)
    assert create_app(models).test_client().get("/healthz").status_code == 200  # the copy as it is serves
    data = bytearray((models / name).read_bytes())
    data[len(data) // 3] ^= 0x80
    (models / name).write_bytes(bytes(data))
    with pytest.raises(ModelsChanged, match=f"{name} does not match the manifest"):
        create_app(models)
    proc = cli("serve", "--port", "0", "--models", models, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert str(models / name) in proc.stderr and "sha256" in proc.stderr and "make pipeline" in proc.stderr


def test_full_server_answers_503_with_retry_after(models):
    """With every inference slot taken, a request is refused at once (503, Retry-After, JSON), and
    served again as soon as a slot frees up."""
    app = create_app(models, max_inflight=1, wait=0)
    predictor = app.extensions["genre_predictor"]
    entered, release = threading.Event(), threading.Event()
    real = predictor.prediction

    def slow(*args):
        entered.set()
        release.wait(60)
        return real(*args)

    predictor.prediction = slow
    first = {}
    thread = threading.Thread(
        target=lambda: first.update(r=app.test_client().post("/predict", json={"plot": PLOTS[0]}))
    )
    thread.start()
    try:
        assert entered.wait(60)
        r = app.test_client().post("/predict", json={"plot": PLOTS[1], "poster": b64(POSTER)})
        assert r.status_code == 503 and r.is_json and "busy" in r.get_json()["error"]
        assert r.headers["Retry-After"] == "1"
        assert app.test_client().get("/healthz").status_code == 200  # health checks are not queued
    finally:
        release.set()
        thread.join(60)
    assert first["r"].status_code == 200
    predictor.prediction = real
    assert app.test_client().post("/predict", json={"plot": PLOTS[1]}).status_code == 200


def test_flood_of_good_and_bad_requests_keeps_memory_bounded(models):
    """A shorter run of bench/serve.py's flood against a real server process: every answer is
    200, 400, 413 or 503 (with Retry-After), all JSON; the server's memory after the flood is within
    150 MB of before it (after a warm-up flood, so onnxruntime's arena and malloc have grown)."""
    server = Server("--max_body_mb", "2", "--max_inflight", "2", "--wait", "0.2", models=models)
    try:
        flood(server, 150, None, 12, 2)  # warm-up
        before = server.rss_mb()
        counts, problems, samples, elapsed = flood(server, 400, None, 12, 2)
        after = server.rss_mb()
        assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200
    finally:
        server.stop()
    statuses = {status for _, status in counts}
    kinds = {kind for kind, _ in counts}
    print(
        f"\nflood: {sum(counts.values())} requests in {elapsed:.0f} s, statuses {sorted(statuses)}; "
        f"RSS before {before:.0f} MB, highest {max(samples):.0f} MB, after {after:.0f} MB"
    )
    assert not problems, problems
    assert statuses <= {200, 400, 413, 503} and 200 in statuses and 400 in statuses
    assert len(kinds) >= 8
    assert after - before < 150
