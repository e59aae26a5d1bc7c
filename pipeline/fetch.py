"""Fetch movies into the project's data layout: IMDb's title list, then TMDB for plot, genres and poster.

`python -m pipeline fetch --out DIR` writes DIR/movies.csv and DIR/posters/<tmdb_id>.jpg, the layout
`pipeline.data` reads. Re-running with the same --out resumes: rows are appended and flushed one by one,
and every settled tconst (written, skipped or 404) is logged in DIR/.fetch_tried.txt so it is never asked
again. Only tconsts whose requests ran out of retries are asked again by the next run.
"""

import argparse
import csv
import gzip
import io
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import requests
from PIL import Image
from tqdm import tqdm

IMDB_URL = "https://datasets.imdbws.com/title.basics.tsv.gz"
API_BASE = "https://api.themoviedb.org"
IMAGE_BASE = "https://image.tmdb.org/t/p/w185"
HEADER = ["tmdb_id", "title", "release_date", "original_language", "genres", "overview", "poster", "poster_kind"]
TRIED = ".fetch_tried.txt"
IMDB_COPY = ".title.basics.tsv.gz"


class FetchError(Exception):
    """Stops the run; the message never holds the API key (it travels in params, not in the URL we report)."""


class GiveUp(FetchError):
    """Retries used up on a transient failure (429, 5xx, timeout, bad body): a later run may succeed."""


class Refused(FetchError):
    """A final 4xx answer: asking again will not help."""


class NotFound(Refused):
    """HTTP 404."""


def imdb_movies(path: Path, min_year: int | None = None) -> Iterator[str]:
    """tconsts of non-adult movies (from min_year on) in an IMDb title.basics TSV, gzipped or not, streamed."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"  # sniff: a server may already have undone a Content-Encoding: gzip
    with (gzip.open if gzipped else open)(path, "rt", encoding="utf-8", newline="\n") as f:
        col = {name: i for i, name in enumerate(f.readline().rstrip("\n").split("\t"))}
        for line in f:
            row = line.rstrip("\n").split("\t")  # IMDb's TSV has no quoting: titles may hold a bare "
            if len(row) < len(col) or row[col["titleType"]] != "movie" or row[col["isAdult"]] != "0":
                continue
            year = row[col["startYear"]]  # "\N" when unknown: never passes a min_year
            if min_year is not None and not (year.isdigit() and int(year) >= min_year):
                continue
            yield row[col["tconst"]]


def as_json(r: requests.Response) -> dict:
    return r.json()  # a garbled body raises ValueError, which get() retries


def as_image(r: requests.Response) -> bytes:
    """The body, once Pillow has decoded all of it: a truncated transfer is a failed attempt."""
    try:
        with Image.open(io.BytesIO(r.content)) as im:
            im.load()
    except Exception as e:
        raise ValueError(f"undecodable image ({e})") from e
    return r.content


def retry_after(r: requests.Response, default: float) -> float:
    try:
        return max(0.0, float(r.headers["Retry-After"]))
    except (KeyError, ValueError):  # absent, or an HTTP date: plain backoff
        return default


def clean(text) -> str:
    return " ".join(str(text or "").split())  # one line per row, like the project's data


def existing_ids(table: Path) -> set[str]:
    """tmdb_ids already in movies.csv; a last row cut short by a crash is dropped first."""
    if not table.exists():
        return set()
    data = table.read_bytes()
    if data and not data.endswith(b"\n"):
        table.write_bytes(data[: data.rfind(b"\n") + 1])
    with open(table, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames not in (None, HEADER):
            raise FetchError(f"{table} has another header ({reader.fieldnames}); refusing to append to it")
        return {row["tmdb_id"] for row in reader}


class Fetcher:
    """TMDB client with one rate limit and retry policy for every request, writing into one folder."""

    def __init__(
        self,
        out: Path,
        key: str,
        *,
        api_base: str = API_BASE,
        image_base: str = IMAGE_BASE,
        rate: float = 20.0,
        retries: int = 5,
        timeout: float = 10.0,
        backoff: float = 1.0,
    ):
        self.out, self.key = Path(out), key
        self.api_base, self.image_base = api_base.rstrip("/"), image_base.rstrip("/")
        self.interval, self.retries, self.timeout, self.backoff = 1 / rate, max(1, retries), timeout, backoff
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "mm-genre-fetch"
        self.next_at = 0.0
        self.genres: dict[int, str] = {}

    def wait_turn(self) -> None:
        """Min-interval limiter: request starts are at least 1/rate s apart, retries included."""
        now = time.monotonic()
        if self.next_at > now:
            time.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval

    def get(self, url: str, params: dict | None = None, check: Callable | None = None, stream: bool = False):
        """GET, retried with exponential backoff on 429/5xx/timeouts/connection errors and on bodies
        `check` rejects with ValueError; returns check(response), or the response without a check."""
        pause, why = 0.0, ""
        for attempt in range(self.retries):
            if attempt:
                time.sleep(pause)
            pause = self.backoff * 2**attempt
            self.wait_turn()
            try:
                r = self.session.get(url, params=params, timeout=self.timeout, stream=stream)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
                why = type(e).__name__  # not str(e): it quotes the full URL, API key included
                continue
            if r.status_code == 404:
                raise NotFound(f"{url}: HTTP 404")
            if r.status_code == 429 or r.status_code >= 500:
                why, pause = f"HTTP {r.status_code}", retry_after(r, pause)
                r.close()
                continue
            if r.status_code >= 400:
                raise Refused(f"{url}: HTTP {r.status_code}")
            if check is None:
                return r
            try:
                return check(r)
            except ValueError as e:
                why = str(e)
        raise GiveUp(f"{url}: {why} after {self.retries} attempts")

    def api(self, path: str, **params) -> dict:
        return self.get(f"{self.api_base}/3/{path}", {**params, "api_key": self.key}, as_json)

    def load_genres(self) -> None:
        self.genres = {g["id"]: g["name"] for g in self.api("genre/movie/list")["genres"]}

    def imdb_file(self, source: str) -> Path:
        """A local path as given; a URL is streamed to disk once, into --out, and reused by later runs."""
        if not source.startswith(("http://", "https://")):
            return Path(source)
        path = self.out / IMDB_COPY
        if not path.exists():
            part = path.with_name(path.name + ".part")
            with self.get(source, stream=True) as r, open(part, "wb") as f:
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
            os.replace(part, path)  # a broken download never passes for a whole one
        return path

    def poster(self, tmdb_id: str, poster_path: str | None) -> str:
        """Path of the saved poster relative to --out, or "" (a plot-only row) when none can be had."""
        if not poster_path:
            return ""
        try:
            data = self.get(self.image_base + poster_path, check=as_image)
        except (GiveUp, Refused):
            return ""
        rel = f"posters/{tmdb_id}.jpg"
        part = self.out / (rel + ".part")
        part.write_bytes(data)
        os.replace(part, self.out / rel)
        return rel

    def movie(self, tconst: str, have: set[str]) -> list[str] | None:
        """The CSV row for one tconst, or None when TMDB lacks it or it is unusable (no plot, no genres, a repeat)."""
        try:
            found = self.api(f"find/{tconst}", external_source="imdb_id").get("movie_results") or []
        except NotFound:
            return None
        if not found:
            return None
        m = found[0]
        tmdb_id, overview = str(m["id"]), clean(m.get("overview"))
        genres = [self.genres[g] for g in m.get("genre_ids") or [] if g in self.genres]
        if tmdb_id in have or not overview or not genres:
            return None
        poster = self.poster(tmdb_id, m.get("poster_path"))
        language, date, kind = m.get("original_language") or "", m.get("release_date") or "", "en" if poster else ""
        return [tmdb_id, clean(m.get("title")), date, language, "|".join(genres), overview, poster, kind]

    def run(self, tconsts: Iterable[str], limit: int | None = None) -> Counter:
        """Fetch until movies.csv holds `limit` movies (None: every tconst), resuming what is there."""
        (self.out / "posters").mkdir(parents=True, exist_ok=True)
        table, log_path = self.out / "movies.csv", self.out / TRIED
        have = existing_ids(table)
        tried = set(log_path.read_text().split()) if log_path.exists() else set()
        counts = Counter({"fetched": 0, "plot-only": 0, "skipped": 0, "failed": 0})
        with (
            open(table, "a", newline="", encoding="utf-8") as f,
            open(log_path, "a", encoding="utf-8") as log,
            tqdm(total=limit, initial=len(have), unit="movie", desc="fetch") as bar,
        ):
            rows = csv.writer(f, lineterminator="\n")
            if f.tell() == 0:
                rows.writerow(HEADER)
            for tconst in tconsts:
                if limit is not None and len(have) >= limit:
                    break
                if tconst in tried:
                    continue
                try:
                    row = self.movie(tconst, have)
                except GiveUp as e:
                    counts["failed"] += 1  # not logged as tried: the next run asks again
                    tqdm.write(f"failed {tconst}: {e}")
                    continue
                if row is None:
                    counts["skipped"] += 1
                else:
                    rows.writerow(row)
                    f.flush()  # before the tried log: a crash in between costs a /find, never a row
                    have.add(row[0])
                    counts["fetched" if row[6] else "plot-only"] += 1
                    bar.update()
                log.write(tconst + "\n")
                log.flush()
                tried.add(tconst)
                bar.set_postfix(counts, refresh=False)
        counts["total"] = len(have)
        return counts


def fetch(out: Path, key: str, imdb: str = IMDB_URL, *, limit=None, min_year=None, **options) -> Counter:
    """The whole job without argparse. options: api_base, image_base, rate, retries, timeout, backoff."""
    fetcher = Fetcher(out, key, **options)
    fetcher.out.mkdir(parents=True, exist_ok=True)
    fetcher.load_genres()  # first: a bad key fails here, before a 200 MB download
    return fetcher.run(imdb_movies(fetcher.imdb_file(imdb), min_year), limit)


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for movies.csv and posters/ (resumed)")
    parser.add_argument("--imdb", default=IMDB_URL, help="title.basics.tsv.gz: a path, or a URL downloaded into --out")
    parser.add_argument("--limit", type=int, help="stop once movies.csv holds this many movies (default: no limit)")
    parser.add_argument("--min_year", type=int, help="only movies whose startYear is this or later")
    parser.add_argument("--rate", type=positive, default=20.0, help="at most this many requests per second")
    parser.add_argument("--retries", type=int, default=5, help="attempts per request, at most")
    parser.add_argument("--timeout", type=positive, default=10.0, help="seconds to wait on a server")
    parser.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    parser.add_argument("--api_base", default=API_BASE, help="TMDB API root")
    parser.add_argument("--image_base", default=IMAGE_BASE, help="TMDB image root, size included")


def main(args: argparse.Namespace) -> int:
    key = os.environ.get("TMDB_API_KEY", "").strip()
    if not key:
        print("error: TMDB_API_KEY is not set (an API key from themoviedb.org/settings/api)", file=sys.stderr)
        return 2
    options = {k: getattr(args, k) for k in ("api_base", "image_base", "rate", "retries", "timeout", "backoff")}
    try:
        counts = fetch(args.out, key, args.imdb, limit=args.limit, min_year=args.min_year, **options)
    except (FetchError, requests.RequestException, OSError) as e:
        print(f"error: {str(e).replace(key, '***')}", file=sys.stderr)
        return 1
    print(
        f"fetch: {counts['fetched']} fetched, {counts['plot-only']} plot-only, {counts['skipped']} skipped, "
        f"{counts['failed']} failed; {Path(args.out) / 'movies.csv'} holds {counts['total']} movies"
    )
    return 0
