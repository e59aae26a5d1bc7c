"""`predict`: genres for plots (and optional posters) from the exported ONNX files.

The same files, tokenizer and preprocessing as the in-browser demo, run with onnxruntime.

    python -m pipeline predict movies.csv --out genres.csv [--workers N] [--batch N] [--allow-outside]

The CSV is read as a stream, a chunk of rows at a time, so memory does not grow with its length.
A malformed line is reported with its line number and skipped; the run goes on. Chunks go to
`--workers` processes (default: one per core), each with its own single-threaded sessions. A model
is run on several rows per call (`--batch`) only when that leaves its outputs unchanged: the
manifest says so with "batchable" (an int8 model that quantizes activations dynamically computes
one scale over the whole input tensor, so batching would change every row's embedding); the float
fusion head is always batchable.

Exit status: 0 when every row got a prediction, 1 when some rows were skipped (each reported on
stderr with its line number), 2 when the input or the models cannot be used at all.
"""

import argparse
import csv
import json
import multiprocessing
import os
import re
import stat
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer
from tqdm import tqdm

from . import config, image
from .text import encode

MODES = ("plot", "plot+poster")
CREATE = "python -m pipeline export"  # the command that writes the models


class ModelsMissing(RuntimeError):
    """The models folder lacks manifest.json or a file it names."""


def check_models(models: Path) -> dict:
    """The manifest, after checking that it and every file it ships exist; ModelsMissing says what is not there."""
    manifest = Path(models) / "manifest.json"
    if not manifest.is_file():
        raise ModelsMissing(f"no models at {manifest}; create them with `{CREATE}`")
    spec = json.loads(manifest.read_text())
    for name in spec.get("files", {}):
        if not (Path(models) / name).is_file():
            raise ModelsMissing(f"model file {Path(models) / name} is missing; create it with `{CREATE}`")
    return spec


def mode_thresholds(spec: dict) -> dict[str, np.ndarray]:
    """{"plot": [G], "plot+poster": [G]} from the manifest; the old single list serves both modes."""
    t = spec["thresholds"]
    if isinstance(t, list):
        t = {mode: t for mode in MODES}
    return {mode: np.array(t[mode], dtype=np.float32) for mode in MODES}


def takes_batches(session: ort.InferenceSession) -> bool:
    """Whether every input's first dimension is free (not fixed at 1)."""
    return all(not isinstance(i.shape[0], int) or i.shape[0] > 1 for i in session.get_inputs())


class GenrePredictor:
    def __init__(self, models: Path, threads: int = 1):
        models = Path(models)
        self.spec = check_models(models)
        self.labels = self.spec["labels"]
        self.thresholds = mode_thresholds(self.spec)
        self.text_dim = self.spec["text_encoder"]["dim"]
        self.image_dim = self.spec["poster_encoder"]["dim"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1

        def session(part: str) -> ort.InferenceSession:
            return ort.InferenceSession(str(models / self.spec[part]["file"]), opts, providers=["CPUExecutionProvider"])

        self.text, self.poster, self.head = session("text_encoder"), session("poster_encoder"), session("fusion_head")
        # several rows per call only when the manifest says outputs stay the same and the graph takes a batch
        self.text_batchable = bool(self.spec["text_encoder"].get("batchable")) and takes_batches(self.text)
        self.poster_batchable = bool(self.spec["poster_encoder"].get("batchable")) and takes_batches(self.poster)
        self.tokenizer = Tokenizer.from_file(str(models / self.spec["text_encoder"]["tokenizer"]))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.max_len = self.spec["text_encoder"]["max_len"]

    def embed_plot(self, plot: str) -> np.ndarray:
        ids = np.array([encode(self.tokenizer, plot, self.max_len)], dtype=np.int64)
        return self.text.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]

    def embed_plots(self, plots: list[str], batch: int = 1) -> np.ndarray:
        """[N, text dim]. Several plots per call only when the manifest marks the encoder batchable:
        plots sorted by length, padded within a call and masked."""
        if not self.text_batchable or batch <= 1:
            return np.concatenate([self.embed_plot(p) for p in plots]) if plots else np.zeros((0, self.text_dim))
        encoded = [encode(self.tokenizer, p, self.max_len) for p in plots]
        order = np.argsort([len(e) for e in encoded], kind="stable")
        out = np.zeros((len(plots), self.text_dim), np.float32)
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            width = max(len(encoded[i]) for i in rows)
            ids = np.zeros((len(rows), width), np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for j, i in enumerate(rows):
                ids[j, : len(encoded[i])], mask[j, : len(encoded[i])] = encoded[i], 1
            out[rows] = self.text.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def embed_poster(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
        return self.poster.run(None, {"image": x})[0]

    def embed_posters(self, images: list[np.ndarray]) -> np.ndarray:
        """[N, image dim]; one call per poster unless the manifest marks the encoder batchable
        (then one call per group of equal-sized posters)."""
        out = np.zeros((len(images), self.image_dim), np.float32)
        if not self.poster_batchable:
            for i, pixels in enumerate(images):
                out[i] = self.embed_poster(pixels)[0]
            return out
        groups: dict[tuple, list[int]] = {}
        for i, pixels in enumerate(images):
            groups.setdefault(pixels.shape, []).append(i)
        for rows in groups.values():
            x = np.ascontiguousarray(np.stack([images[i] for i in rows]).transpose(0, 3, 1, 2), dtype=np.float32)
            out[rows] = self.poster.run(None, {"image": x})[0]
        return out

    def combine_many(self, text: np.ndarray, image: np.ndarray, has_poster: np.ndarray, batch: int = 1) -> np.ndarray:
        """[N, G] probabilities; the fusion head is float, so `batch` rows per call change nothing but speed."""
        out = np.zeros((len(text), len(self.labels)), np.float32)
        step = max(1, batch)
        for s in range(0, len(text), step):
            feeds = {
                "text": np.ascontiguousarray(text[s : s + step], np.float32),
                "image": np.ascontiguousarray(image[s : s + step], np.float32),
                "has_poster": np.asarray(has_poster[s : s + step], np.float32).reshape(-1, 1),
            }
            out[s : s + step] = self.head.run(None, feeds)[0]
        return out

    def combine(self, plot_emb: np.ndarray, poster_emb: np.ndarray | None = None) -> np.ndarray:
        """Genre probabilities [G] from one plot embedding and, when there is one, a poster embedding."""
        has = poster_emb is not None
        image = poster_emb if has else np.zeros((1, self.image_dim), np.float32)
        return self.combine_many(plot_emb, image, np.array([float(has)]))[0]

    def probabilities(self, plot: str, pixels: np.ndarray | None = None) -> np.ndarray:
        return self.combine(self.embed_plot(plot), None if pixels is None else self.embed_poster(pixels))

    def decide(self, probs: np.ndarray, mode: str) -> list[str]:
        """Genres at or over `mode`'s thresholds ("plot" or "plot+poster"); with none, the most probable."""
        return decide(probs, self.labels, self.thresholds[mode])


def decide(probs: np.ndarray, labels: list[str], thresholds: np.ndarray) -> list[str]:
    """The manifest's rule: genres whose probability is at or over its threshold; if none, the most probable."""
    return [g for g, p, t in zip(labels, probs, thresholds) if p >= t] or [labels[int(np.argmax(probs))]]


SENTENCE = re.compile(r"[^.!?]+[.!?]*\s*")  # demo.js splits plots with the same pattern


def sentences(plot: str) -> list[str]:
    return SENTENCE.findall(plot)


def sentence_importance(predictor: GenrePredictor, plot: str, pixels: np.ndarray | None = None) -> list[dict]:
    """Leave-one-sentence-out occlusion: how much each genre's probability drops without each sentence."""
    parts = sentences(plot)
    poster = None if pixels is None else predictor.embed_poster(pixels)  # the same for every occlusion
    full = predictor.combine(predictor.embed_plot(plot), poster)
    out = []
    for i, sentence in enumerate(parts):
        rest = "".join(parts[:i] + parts[i + 1 :]).strip()
        if rest and len(parts) > 1:
            without = predictor.combine(predictor.embed_plot(rest), poster)
        else:
            without = np.full_like(full, np.nan)
        out.append({"sentence": sentence, "drop": dict(zip(predictor.labels, (full - without).tolist()))})
    return out


# ---------------------------------------------------------------------------------------------
# Reading the CSV: one record at a time, malformed lines reported and skipped.

MAX_LINE = 2**20  # bytes; a longer physical line is reported and skipped without being held


@dataclass
class Record:
    line: int  # the line the record starts on (the header is line 1)
    fields: list[str] | None  # None when the record is unusable
    problem: str = ""


class CsvRecords:
    """The records of a CSV file (RFC 4180, UTF-8), each with its line number. A record with invalid
    UTF-8, bad quoting or the wrong number of fields comes back with `fields=None` and a problem;
    reading goes on after it. When a bad record spans several lines (an unclosed quote swallows the
    lines after it), those lines are read again as records of their own."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.lineno = 0
        self.again: deque = deque()  # (line, text, problem) to be read again
        self.taken: list = []  # the lines of the record being read
        self.width: int | None = None  # expected number of fields, once the header is known

    def physical(self):
        if self.again:
            return self.again.popleft()
        raw = self.f.readline(MAX_LINE + 1)
        if not raw:
            return None
        self.lineno += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while (rest := self.f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            return self.lineno, "\n", f"line is longer than {MAX_LINE // 2**20} MiB"
        if self.lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte-order mark, as spreadsheet programs write
        try:
            return self.lineno, raw.decode("utf-8"), ""
        except UnicodeDecodeError as e:
            return (
                self.lineno,
                raw.decode("utf-8", "replace"),
                f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})",
            )

    def lines(self) -> Iterator[str]:
        while (item := self.physical()) is not None:
            self.taken.append(item)
            yield item[1]

    def __iter__(self) -> Iterator[Record]:
        reader = csv.reader(self.lines(), strict=True)
        while True:
            self.taken = []
            structure = ""  # a quoting or field-count problem
            try:
                fields = next(reader)
                if fields and self.width is not None and len(fields) != self.width:
                    structure = f"expected {self.width} fields, found {len(fields)}"
            except StopIteration:
                return
            except csv.Error as e:
                fields, structure = None, f"bad CSV ({e})"
            if not self.taken:
                return
            first, last = self.taken[0][0], self.taken[-1][0]
            encoding = next((p for _, _, p in self.taken if p), "")
            if structure and len(self.taken) > 1:  # an unclosed quote took the lines after the first: read them again
                self.again.extendleft(reversed(self.taken[1:]))
                yield Record(first, None, f"{structure} (in the record from line {first} to {last})")
            elif structure or encoding:
                yield Record(first, None, structure or encoding)
            elif fields:  # blank lines are skipped, as pandas does
                yield Record(first, fields)


# ---------------------------------------------------------------------------------------------
# Predicting, in worker processes.


@dataclass
class Row:
    line: int
    tmdb_id: str | None
    overview: str | None  # None: no prediction for this row (reported already)
    poster: str | None = None  # the poster's path (allowed by the caller), or None
    poster_name: str = ""  # as the CSV writes it, for messages


_worker: dict = {}


def _init(models: str, batch: int) -> None:
    _worker["predictor"], _worker["batch"] = GenrePredictor(Path(models), threads=1), batch


def _predict(jobs: list[tuple[int, str, str | None, str]]) -> tuple[np.ndarray, list[str], list[str]]:
    """(line, overview, poster path or None, poster as written) → probabilities [N, G], each row's mode, warnings."""
    predictor, batch = _worker["predictor"], _worker["batch"]
    text = predictor.embed_plots([job[1] for job in jobs], batch)
    posters = np.zeros((len(jobs), predictor.image_dim), np.float32)
    has_poster = np.zeros(len(jobs), np.float32)
    warnings, loaded, where = [], [], []
    for i, (line, _, poster, name) in enumerate(jobs):
        if poster is None:
            continue
        try:
            loaded.append(read_poster(poster))
            where.append(i)
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            warnings.append(f"warning: line {line}: poster {name!r} unusable ({reason}); plot-only prediction")
        if len(loaded) >= max(1, batch) or (loaded and not predictor.poster_batchable):
            posters[where], has_poster[where] = predictor.embed_posters(loaded), 1
            loaded, where = [], []
    if loaded:
        posters[where], has_poster[where] = predictor.embed_posters(loaded), 1
    probs = predictor.combine_many(text, posters, has_poster, batch)
    return probs, [MODES[int(h)] for h in has_poster], warnings


def read_poster(path: str) -> np.ndarray:
    """Pixels of a poster file; its size is checked before it is read (image.load_image then checks
    the pixel count from the header before decoding)."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    if info.st_size > image.MAX_BYTES:
        raise ValueError(f"file is {info.st_size / 2**20:.1f} MB, over the {image.MAX_BYTES // 2**20} MB limit")
    return image.load_image(path)


def run_chunks(chunks: Iterator[list], models: Path, workers: int, batch: int) -> Iterator[tuple[list, tuple]]:
    """(chunk, _predict's answer for its rows) in input order; at most 2 chunks per worker in flight."""

    def jobs(chunk):
        return [(r.line, r.overview, r.poster, r.poster_name) for r in chunk if r.overview is not None]

    if workers <= 1:
        _init(str(models), batch)
        for chunk in chunks:
            yield chunk, _predict(jobs(chunk))
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(str(models), batch)) as pool:
        inflight: deque = deque()
        for chunk in chunks:
            inflight.append((chunk, pool.submit(_predict, jobs(chunk))))
            if len(inflight) >= 2 * workers:
                chunk, future = inflight.popleft()
                yield chunk, future.result()
        while inflight:
            chunk, future = inflight.popleft()
            yield chunk, future.result()


def poster_path(base: Path, poster: str, allow_outside: bool) -> Path:
    """The poster's path, relative to the CSV's folder; ValueError when it leaves that folder."""
    path = base / poster
    if not allow_outside:
        if Path(poster).is_absolute():
            raise ValueError("is an absolute path")
        if not path.resolve().is_relative_to(base.resolve()):
            raise ValueError("leaves the CSV's folder")
    return path


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(2**20), b""))


def predict_csv(
    input_csv: Path,
    out_csv: Path,
    models: Path,
    workers: int = 1,
    batch: int = 32,
    allow_outside: bool = False,
    chunk_rows: int = 64,
) -> int:
    def error(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    try:
        spec = check_models(models)
    except (ModelsMissing, ValueError) as e:
        return error(str(e))
    labels = spec["labels"]
    try:
        f = open(input_csv, "rb")
    except OSError as e:
        return error(f"cannot read {input_csv}: {e.strerror or e}")
    with f:
        records = CsvRecords(f)
        stream = iter(records)
        header = next(stream, None)
        if header is None:
            return error(f"{input_csv} is empty")
        if header.fields is None:
            return error(f"{input_csv} line {header.line}: cannot read the header: {header.problem}")
        columns = [c.strip() for c in header.fields]
        if "overview" not in columns:
            return error(f"{input_csv} has no 'overview' column (columns: {', '.join(columns)})")
        records.width = len(columns)
        col = {name: columns.index(name) for name in ("overview", "poster", "tmdb_id") if name in columns}
        base = Path(input_csv).parent
        skipped = 0

        def rows() -> Iterator[Row]:
            nonlocal skipped
            for rec in stream:
                if rec.fields is None:
                    print(f"warning: line {rec.line}: skipped: {rec.problem}", file=sys.stderr)
                    skipped += 1
                    continue
                tmdb_id = rec.fields[col["tmdb_id"]] if "tmdb_id" in col else None
                overview = rec.fields[col["overview"]]
                if not overview.strip():
                    print(f"warning: line {rec.line}: empty overview; no prediction", file=sys.stderr)
                    skipped += 1
                    yield Row(rec.line, tmdb_id, None)
                    continue
                poster = rec.fields[col["poster"]].strip() if "poster" in col else ""
                path = None
                if poster:
                    try:
                        path = str(poster_path(base, poster, allow_outside))
                    except ValueError as e:
                        print(
                            f"warning: line {rec.line}: poster {poster!r} refused: it {e} "
                            "(--allow-outside permits it); plot-only prediction",
                            file=sys.stderr,
                        )
                yield Row(rec.line, tmdb_id, overview, path, poster)

        def chunks() -> Iterator[list[Row]]:
            chunk = []
            for row in rows():
                chunk.append(row)
                if len(chunk) >= chunk_rows:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

        written = 0
        progress = tqdm(total=max(count_lines(input_csv) - 1, 0), unit=" rows", desc="predicting", disable=None)
        with open(out_csv, "w", newline="", encoding="utf-8") as out:
            w = csv.writer(out)
            w.writerow((["tmdb_id"] if "tmdb_id" in col else []) + labels + ["genres", "mode"])
            thresholds = mode_thresholds(spec)
            try:
                for chunk, (probs, modes, warnings) in run_chunks(chunks(), models, workers, batch):
                    for message in warnings:
                        print(message, file=sys.stderr)
                    k = 0
                    for row in chunk:
                        cells = [] if row.tmdb_id is None else [row.tmdb_id]
                        if row.overview is None:
                            cells += [""] * len(labels) + ["", ""]
                        else:
                            p, mode = probs[k], modes[k]
                            k += 1
                            cells += [f"{x:.6f}" for x in p] + ["|".join(decide(p, labels, thresholds[mode])), mode]
                            written += 1
                        w.writerow(cells)
                    progress.update(len(chunk))
            except BrokenProcessPool:  # a worker killed (out of memory?): say so, keep what was written
                progress.close()
                return error(f"a worker process died after {written} predictions were written to {out_csv}")
        progress.close()
    note = f"; {skipped} rows skipped (see the warnings above)" if skipped else ""
    print(f"wrote {written} predictions to {out_csv}{note}", file=sys.stderr)
    return 1 if skipped else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input",
        type=Path,
        help="CSV with an 'overview' column; optional 'poster' (path relative to the CSV's folder) and 'tmdb_id'",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="CSV to write: tmdb_id, one probability column per genre, genres, mode"
    )
    p.add_argument(
        "--models",
        type=Path,
        default=config.ROOT / config.load()["models"],
        help="folder with manifest.json and the ONNX files",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        help="worker processes, each running single-threaded models (default: this machine's cores)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=32,
        help="rows per model call for the models whose manifest entry says batchable, and the fusion head "
        "(1: one row per call everywhere)",
    )
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="read poster paths that are absolute or leave the CSV's folder (refused by default)",
    )


def main(args: argparse.Namespace) -> int:
    return predict_csv(
        args.input, args.out, args.models, workers=args.workers, batch=args.batch, allow_outside=args.allow_outside
    )
