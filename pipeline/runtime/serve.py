"""`serve`: a local HTTP API over the exported ONNX models (the course project's Flask app).

GET /healthz, and POST /predict with JSON {"plot": ..., "poster": base64} or a form (plot, poster file).
Every answer is JSON, errors included: {"error": "..."}. What a prediction holds: ANSWER below (`serve
--help` prints it), the number of windows the plot was read in among it (the manifest's rules.windows).

At most `max_inflight` requests are read and predicted at once (a semaphore taken before the body is
read); a request that finds every slot taken for `wait` seconds gets 503 with Retry-After, so a flood
queues nothing in memory. Posters are size-checked before decoding (image_io.load_image).
"""

import argparse
import base64
import binascii
import ctypes
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from pipeline import config
from pipeline.runtime import image_io
from pipeline.runtime.manifest import MODES
from pipeline.runtime.predictor import GenrePredictor

FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


class BadInput(ValueError):
    """A client mistake, answered with 400 and this message."""


class Busy(Exception):
    """Every inference slot is taken: 503 with Retry-After."""


RETRY_AFTER_S = 1


def malloc_tuning() -> None:
    """glibc only: few malloc arenas (a thread per connection would otherwise spread freed memory over
    up to 8 per core), and memory handed back after large frees; a no-op elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
        libc.mallopt(-1, 32 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def read_image(data: bytes) -> np.ndarray:
    try:
        return image_io.load_image(data)
    except ValueError as e:
        raise BadInput(f"'poster' is not a usable image ({e})") from None


def decode_poster(text) -> np.ndarray:
    """Pixels from base64 text, with or without a data-URL prefix such as "data:image/png;base64,"."""
    if not isinstance(text, str):
        raise BadInput("'poster' must be a base64 string")
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise BadInput("'poster' data URL must be base64-encoded (data:<type>;base64,...)")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)  # line-wrapped base64 is still base64
    except (binascii.Error, ValueError) as e:
        raise BadInput(f"'poster' is not valid base64 ({e})") from None
    return read_image(data)


def check_plot(plot) -> str:
    if plot is None:
        raise BadInput("missing 'plot': send the movie's plot summary as text")
    if not isinstance(plot, str):
        raise BadInput(f"'plot' must be a string, not {type(plot).__name__}")
    if not plot.strip():
        raise BadInput("'plot' is empty")
    return plot


def read_request() -> tuple[str, np.ndarray | None]:
    """(plot, poster pixels or None) from a JSON body or a form; BadInput says what is wrong."""
    if request.is_json:
        try:
            body = json.loads(request.get_data())
        except ValueError as e:  # also bytes that are not UTF-8
            raise BadInput(f"body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise BadInput('JSON body must be an object like {"plot": "...", "poster": "<base64>"}')
        plot, poster = check_plot(body.get("plot")), body.get("poster")
        return plot, None if poster in (None, "") else decode_poster(poster)  # null or "" = no poster
    if request.mimetype in FORMS:
        plot, upload = check_plot(request.form.get("plot")), request.files.get("poster")
        if upload is not None and upload.filename:  # browsers send a nameless empty part when no file is chosen
            return plot, read_image(upload.read())
        return plot, decode_poster(request.form["poster"]) if request.form.get("poster") else None
    raise BadInput("send JSON (Content-Type: application/json) or a form (multipart/form-data) with a 'plot'")


def create_app(
    models: Path, max_body_mb: float = 25, threads: int = 1, max_inflight: int | None = None, wait: float = 0.5
) -> Flask:
    """The app, with the models loaded once here (ModelsMissing, or ModelsChanged for a file that is not the one
    the manifest describes, and nothing is served); their sessions are shared by all request threads.
    At most `max_inflight` (default: the cores) requests are predicted at once; others wait up to
    `wait` seconds for a slot, then get 503."""
    predictor = GenrePredictor(models, threads)  # every model file checked against the manifest's sha256 first
    # the poster encoder loads beside the first requests, not before the server answers (a plot-only request
    # never waits for it; a poster that comes first waits for the load under way, not for a second one)
    threading.Thread(target=predictor.load_poster, name="poster encoder", daemon=True).start()
    slots = max_inflight or cores()
    semaphore = threading.BoundedSemaphore(slots)
    app = Flask(__name__)
    app.extensions["genre_predictor"] = predictor
    app.config["MAX_CONTENT_LENGTH"] = int(max_body_mb * 2**20)
    app.config["MAX_FORM_MEMORY_SIZE"] = app.config["MAX_CONTENT_LENGTH"]  # a base64 poster in a form field
    app.json.sort_keys = False  # probabilities in label order

    @app.get("/healthz")
    def healthz():
        """Liveness and what the models predict; no file-system paths."""
        return jsonify(status="ok", labels=predictor.labels, modes=list(MODES), max_inflight=slots)

    @app.post("/predict")
    def predict():
        if not semaphore.acquire(timeout=wait):  # before the body is read: waiting requests hold no body
            raise Busy()
        try:
            start = time.perf_counter()
            plot, pixels = read_request()
            probs, windows = predictor.prediction(plot, pixels)
        finally:
            semaphore.release()
        mode = MODES[pixels is not None]
        probabilities = {g: float(p) for g, p in zip(predictor.labels, probs)}
        top = sorted(probabilities.items(), key=lambda kv: kv[1], reverse=True)[:3]
        return jsonify(
            genres=predictor.decide(probs, mode),
            probabilities=probabilities,
            top=[{"genre": g, "probability": p} for g, p in top],
            poster_used=pixels is not None,
            mode=mode,
            windows=windows,
            ms=round((time.perf_counter() - start) * 1000, 3),
        )

    @app.errorhandler(Busy)
    def busy(e: Busy):
        message = f"busy: {slots} requests are being predicted; retry in {RETRY_AFTER_S} s"
        return jsonify(error=message), 503, {"Retry-After": str(RETRY_AFTER_S)}

    @app.errorhandler(MemoryError)
    def out_of_memory(e: MemoryError):
        app.logger.error("out of memory on %s %s", request.method, request.path)
        return jsonify(error="out of memory; retry later"), 503, {"Retry-After": str(RETRY_AFTER_S)}

    @app.errorhandler(BadInput)
    def bad_input(e: BadInput):
        return jsonify(error=str(e)), 400

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        """404, 405, 413, ... as JSON, keeping werkzeug's headers (such as Allow on a 405)."""
        message = f"request body is over the {max_body_mb:g} MB limit" if e.code == 413 else e.description
        response = e.get_response()
        response.data = json.dumps({"error": message})
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def crash(e: Exception):
        app.logger.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error ({type(e).__name__}); see the server log"), 500

    return app


ANSWER = (
    'POST /predict (JSON {"plot": ..., "poster": base64} or a form with plot and a poster file) answers '
    "JSON: genres, probabilities (per genre), top (the three most likely), poster_used, mode (plot or "
    "plot+poster), windows (how many windows of the text encoder's max_len tokens the plot was read in: a "
    'long plot is read whole, in windows pooled into one prediction with its bag of words) and ms; errors: {"error": ...}.'
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ANSWER
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (0: any free port)")
    models = config.ROOT / config.load()["models"]  # the same default as `predict`
    parser.add_argument("--models", type=Path, default=models, help="folder with manifest.json and the ONNX files")
    parser.add_argument("--max_body_mb", type=float, default=25, help="larger request bodies get 413")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per inference")
    parser.add_argument(
        "--max_inflight", type=int, default=None, help="requests predicted at once (default: the cores); more get 503"
    )
    parser.add_argument("--wait", type=float, default=0.5, help="seconds a request waits for a free slot before 503")


def main(args: argparse.Namespace) -> int:
    """Serve until interrupted (Ctrl-C); each request runs in its own thread."""
    malloc_tuning()
    try:
        app = create_app(args.models, args.max_body_mb, args.threads, args.max_inflight, args.wait)
        server = make_server(args.host, args.port, app, threaded=True)
    except Exception as e:  # missing or broken models: a message, not a traceback (werkzeug reports a busy port)
        print(f"error: cannot start the server: {e}", file=sys.stderr)
        return 2
    print(f"serving {args.models} on http://{args.host}:{server.port} (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
