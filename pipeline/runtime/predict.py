"""`predict`: genres for a CSV of plots (and optional posters) from the exported ONNX files.

    python -m pipeline predict movies.csv --out genres.csv [--workers N] [--batch N] [--allow-outside]

The CSV is read as a stream (pipeline/csv_stream.py), a chunk of rows at a time, so memory does not
grow with its length; a malformed line is reported with its line number and skipped. Chunks go to
`--workers` processes (default: one per core), each with its own single-threaded GenrePredictor
(pipeline/predictor.py), which runs `--batch` inputs per model call where the manifest allows it. A worker
is only started for a chunk it can take: an input of at most one chunk (64 rows) runs in this process,
with no pool. Each worker loads its own models (about 0.25 s of CPU and 130 MB), which a process that
has a single chunk to predict would pay for nothing: one chunk is never split between workers.

A plot is read whole (its first max_chars characters; the manifest's rules.windows): one longer than the
text encoder's max_len tokens is read in windows, pooled into one prediction with its bag of words. The output's
`windows` column says how many windows each plot was read in (1 for a plot that fits in one). A chunk's
memory is bounded by its rows and max_chars, not by the file.

The output: a row per input row, in order: tmdb_id (when the input has it), one probability column per
genre, genres (joined with |), mode ("plot" or "plot+poster"), windows; empty cells for a row with no
prediction.

Before anything is written: `--out` must not be the input (the same file under any spelling or link),
and the models must pass manifest.check_models (the manifest's schema, every file's size and sha256).

Exit status: 0 when every row got a prediction, 1 when some rows were skipped (each reported on
stderr with its line number), 2 when the input, the output path or the models cannot be used at all.

GenrePredictor, sentence_importance, check_models, ModelsMissing and MODES are importable from here too.
"""

import argparse
import csv
import os
import stat
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import config
from pipeline.runtime import image_io
from pipeline.runtime.csv_stream import CsvRecords
from pipeline.runtime.manifest import MODES, ModelsMissing, check_models
from pipeline.runtime.occlusion import sentence_importance
from pipeline.runtime.predictor import GenrePredictor, read_bag

__all__ = ["MODES", "GenrePredictor", "ModelsMissing", "check_models", "predict_csv", "sentence_importance"]
BATCH = 32  # inputs per model call by default (bench.predict measures it against one at a time)


class Unusable(Exception):
    """The input or the models cannot be used at all: a one-line message, exit status 2."""


@dataclass
class Row:
    line: int
    tmdb_id: str | None
    overview: str | None  # None: no prediction for this row (reported already)
    poster: str | None = None  # the poster's path (allowed by the caller), or None
    poster_name: str = ""  # as the CSV writes it, for messages


# ---------------------------------------------------------------------------------------------
# In each worker process: one predictor, a chunk of rows per call.

_worker: dict = {}


def _init(models: str, batch: int, spec: dict | None = None) -> None:
    _worker["predictor"], _worker["batch"] = GenrePredictor(Path(models), threads=1, spec=spec), batch


def _predict(
    jobs: list[tuple[int, str, str | None, str]],
) -> tuple[np.ndarray, list[str], list[list[str]], list[str], list[int]]:
    """(line, overview, poster path or None, poster as written) for each row → probabilities [N, G],
    each row's mode and genres, the warnings to print, and how many windows of each plot were read."""
    predictor, batch = _worker["predictor"], _worker["batch"]
    text = predictor.embed_plots([job[1] for job in jobs], batch)  # each plot's window embeddings
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
        if len(loaded) >= max(1, batch) or (loaded and not predictor.poster_batchable):  # decoded pixels held briefly
            posters[where], has_poster[where] = predictor.embed_posters(loaded), 1
            loaded, where = [], []
    if loaded:
        posters[where], has_poster[where] = predictor.embed_posters(loaded), 1
    probs = predictor.combine_windows(text, posters, has_poster, batch, plots=[job[1] for job in jobs])
    modes = [MODES[int(h)] for h in has_poster]
    genres = [predictor.decide(p, m) for p, m in zip(probs, modes)]
    return probs, modes, genres, warnings, [len(windows) for windows in text]


def read_poster(path: str) -> np.ndarray:
    """Pixels of a poster file; its size is checked before it is read (image_io.load_image then checks
    the pixel count from the header before decoding)."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    if info.st_size > image_io.MAX_BYTES:
        raise ValueError(f"file is {info.st_size / 2**20:.1f} MB, over the {image_io.MAX_BYTES // 2**20} MB limit")
    return image_io.load_image(path)


def run_chunks(
    chunks: Iterator[list[Row]], models: Path, workers: int, batch: int, spec: dict | None = None
) -> Iterator[tuple[list, tuple]]:
    """(chunk, _predict's answer for its rows) in input order; at most 2 chunks per worker in flight.
    One worker: in this process (its predictor uses `spec`, the manifest just checked, when given)."""

    def jobs(chunk):
        return [(r.line, r.overview, r.poster, r.poster_name) for r in chunk if r.overview is not None]

    if workers <= 1:
        _init(str(models), batch, spec)
        for chunk in chunks:
            yield chunk, _predict(jobs(chunk))
        return
    import multiprocessing  # a pool only: a small input never imports it
    from concurrent.futures import ProcessPoolExecutor

    # a bag that does not fit is refused here: in the workers' start-up it read as "a worker process died"
    read_bag(Path(models), spec or check_models(Path(models)))
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


# ---------------------------------------------------------------------------------------------
# In the main process: the CSV's rows in, the predictions out.


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def poster_path(base: Path, poster: str, allow_outside: bool) -> Path:
    """The poster's path, relative to the CSV's folder; ValueError when it leaves that folder."""
    path = base / poster
    if not allow_outside:
        if Path(poster).is_absolute():
            raise ValueError("is an absolute path")
        if not path.resolve().is_relative_to(base.resolve()):
            raise ValueError("leaves the CSV's folder")
    return path


class CsvInput:
    """The rows of an input CSV, header checked (Unusable when it cannot be used); counts the rows
    skipped, each reported as a warning."""

    def __init__(self, f, name: Path, allow_outside: bool):
        self.records = CsvRecords(f)
        self.stream = iter(self.records)
        header = next(self.stream, None)
        if header is None:
            raise Unusable(f"{name} is empty")
        if header.fields is None:
            raise Unusable(f"{name} line {header.line}: cannot read the header: {header.problem}")
        columns = [c.strip() for c in header.fields]
        if "overview" not in columns:
            raise Unusable(f"{name} has no 'overview' column (columns: {', '.join(columns)})")
        self.records.width = len(columns)
        self.col = {c: columns.index(c) for c in ("overview", "poster", "tmdb_id") if c in columns}
        self.base, self.allow_outside, self.skipped = Path(name).parent, allow_outside, 0

    def rows(self) -> Iterator[Row]:
        for rec in self.stream:
            if rec.fields is None:
                warn(f"line {rec.line}: skipped: {rec.problem}")
                self.skipped += 1
                continue
            tmdb_id = rec.fields[self.col["tmdb_id"]] if "tmdb_id" in self.col else None
            overview = rec.fields[self.col["overview"]]
            if not overview.strip():
                warn(f"line {rec.line}: empty overview; no prediction")
                self.skipped += 1
                yield Row(rec.line, tmdb_id, None)
                continue
            poster = rec.fields[self.col["poster"]].strip() if "poster" in self.col else ""
            yield Row(rec.line, tmdb_id, overview, self.allowed(rec.line, poster), poster)

    def allowed(self, line: int, poster: str) -> str | None:
        """The poster's path, or None (no poster, or one refused with a warning)."""
        if not poster:
            return None
        try:
            return str(poster_path(self.base, poster, self.allow_outside))
        except ValueError as e:
            warn(f"line {line}: poster {poster!r} refused: it {e} (--allow-outside permits it); plot-only prediction")
            return None

    def chunks(self, size: int) -> Iterator[list[Row]]:
        chunk = []
        for row in self.rows():
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def open_csv(path: Path):
    try:
        return open(path, "rb")
    except OSError as e:
        raise Unusable(f"cannot read {path}: {e.strerror or e}") from None


def check_out(input_csv: Path, out_csv: Path) -> None:
    """Unusable when `out_csv` is the input file, under any spelling, symlink or hard link: writing it would
    truncate the plots before they are read. Checked before any file is opened."""
    try:
        same = os.path.samefile(input_csv, out_csv)
    except OSError:  # one of them does not exist (yet): they are not the same file
        same = False
    if same:
        raise Unusable(
            f"--out {out_csv} is the input file {input_csv}: writing it would destroy the input; choose another --out"
        )


def workers_for(rows: int, workers: int, chunk_rows: int) -> int:
    """How many worker processes `rows` rows can use: one per chunk at most (a chunk goes to one worker, so
    more would load models and wait), at least 1 (which predicts in this process, no pool)."""
    return max(1, min(workers, -(-rows // chunk_rows)))


class NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(rows: int):
    """tqdm on a terminal (imported only then, as tqdm's own disable=None would show nothing elsewhere)."""
    if not sys.stderr.isatty():
        return NoProgress()
    from tqdm import tqdm

    return tqdm(total=rows, unit=" rows", desc="predicting", disable=None)


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
    """Predictions for every row of `input_csv` into `out_csv`; the exit status (see the module docstring)."""

    def fail(e: Exception) -> int:
        print(f"error: {e}", file=sys.stderr)
        return 2

    try:
        check_out(input_csv, out_csv)
        spec = check_models(models)
    except (Unusable, ModelsMissing) as e:
        return fail(e)
    chunk_rows = max(chunk_rows, batch)
    try:
        with open_csv(input_csv) as f:
            source = CsvInput(f, input_csv, allow_outside)
            rows = max(count_lines(input_csv) - 1, 0)  # physical lines after the header: the rows, or a few more
            workers = workers_for(rows, workers, chunk_rows)
            written = write_predictions(source, rows, out_csv, spec, models, workers, batch, chunk_rows)
    except (Unusable, ModelsMissing) as e:  # ModelsMissing: a model file changed after the check (the poster's)
        return fail(e)
    note = f"; {source.skipped} rows skipped (see the warnings above)" if source.skipped else ""
    print(f"wrote {written} predictions to {out_csv}{note}", file=sys.stderr)
    return 1 if source.skipped else 0


def write_predictions(
    source: CsvInput,
    rows: int,
    out_csv: Path,
    spec: dict,
    models: Path,
    workers: int,
    batch: int,
    chunk_rows: int,
) -> int:
    """Writes the output CSV, a row for every input row (empty cells where there is no prediction);
    returns how many rows were predicted."""
    broken: tuple = ()  # a worker killed: only a pool has workers (and only a pool imports its module)
    if workers > 1:
        from concurrent.futures.process import BrokenProcessPool

        broken = (BrokenProcessPool,)
    has_id, labels = "tmdb_id" in source.col, spec["labels"]
    written = 0
    try:
        out = open(out_csv, "w", newline="", encoding="utf-8")
    except OSError as e:
        raise Unusable(f"cannot write {out_csv}: {e.strerror or e}") from None
    progress = progress_bar(rows)
    with out:
        w = csv.writer(out)
        w.writerow((["tmdb_id"] if has_id else []) + labels + ["genres", "mode", "windows"])
        try:
            for chunk, (probs, modes, genres, warnings, windows) in run_chunks(
                source.chunks(chunk_rows), models, workers, batch, spec
            ):
                for message in warnings:
                    print(message, file=sys.stderr)
                k = 0
                for row in chunk:
                    cells = [] if row.tmdb_id is None else [row.tmdb_id]
                    if row.overview is None:
                        cells += [""] * (len(labels) + 3)
                    else:
                        cells += [f"{x:.6f}" for x in probs[k]] + ["|".join(genres[k]), modes[k], windows[k]]
                        k += 1
                    w.writerow(cells)
                written += k
                progress.update(len(chunk))
        except broken:  # a worker killed (out of memory?): say so, keep what was written
            raise Unusable(f"a worker process died after {written} predictions were written to {out_csv}") from None
        except ModelsMissing:
            if written == 0:  # the models refused before any prediction: no output left behind, as at the start
                out.close()
                out_csv.unlink(missing_ok=True)
            raise
        finally:
            progress.close()
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input",
        type=Path,
        help="CSV with an 'overview' column; optional 'poster' (path relative to the CSV's folder) and 'tmdb_id'",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="CSV to write: tmdb_id, one probability column per genre, genres, mode, windows (how many "
        "windows of the encoder's max_len tokens the plot was read in: a long plot is read whole, in "
        "windows, the manifest's stride apart, pooled into one prediction)",
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
        help="worker processes, each running single-threaded models (default: this machine's cores); never more "
        "than the input's chunks of 64 rows, and none for one chunk (it is predicted in this process)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=BATCH,
        help="inputs per model call (text windows of any plots, posters, fusion head rows) for the models whose "
        "manifest entry says batchable, and the fusion head (1: one per call everywhere)",
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
