"""pipeline.fetch against a fake IMDb + TMDB on 127.0.0.1 that speaks the real formats and misbehaves on cue."""

import argparse
import csv
import gzip
import io
import json
import random
import statistics
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from pipeline import fetch
from pipeline.stages.data import read_movies

KEY = "test-key-123"
TIMEOUT = 0.5  # client timeout; the slow endpoint sleeps well past it
SLOW = 1.5
RETRIES = 3

TSV_ROWS = [  # tconst, titleType, title, isAdult, startYear
    ("tt0000001", "movie", "Sky Battle", "0", "2009"),
    ("tt0000002", "movie", 'The "Quoted" Comedy', "0", "2007"),  # /find: 429 once
    ("tt0000003", "movie", "Undated Drama", "0", r"\N"),  # /find: slower than the timeout once
    ("tt0000004", "movie", "Old Horror", "0", "1995"),  # /find: 500 once
    ("tt0000005", "movie", "Not On TMDB", "0", "2001"),  # empty movie_results
    ("tt0000006", "movie", "Gone", "0", "2005"),  # /find: 404
    ("tt0000007", "tvSeries", "A Series", "0", "2010"),
    ("tt0000008", "movie", "Adult Film", "1", "2010"),
    ("tt0000009", "movie", "No Plot", "0", "2012"),  # empty overview
    ("tt0000010", "movie", "Posterless", "0", "2013"),  # no poster_path
    ("tt0000011", "short", "A Short", "0", "2013"),
]
GENRES = [{"id": 28, "name": "Action"}, {"id": 12, "name": "Adventure"}, {"id": 35, "name": "Comedy"}]
GENRES += [{"id": 18, "name": "Drama"}, {"id": 27, "name": "Horror"}, {"id": 10749, "name": "Romance"}]


def tmdb(tmdb_id, title, genre_ids, poster="auto", overview="A plot\nthat spans two lines."):
    poster_path = f"/p{tmdb_id}.jpg" if poster == "auto" else poster
    return {"id": tmdb_id, "title": title, "overview": overview, "poster_path": poster_path, "genre_ids": genre_ids}


TMDB = {  # tconst: the movie_results entry
    "tt0000001": tmdb(101, "Sky Battle", [28, 12]),
    "tt0000002": tmdb(102, 'The "Quoted" Comedy', [35]),  # poster truncated once
    "tt0000003": tmdb(103, "Undated Drama", [18, 99999]),  # poster always truncated; 99999 is no known genre
    "tt0000004": tmdb(104, "Old Horror", [27]),  # poster 404
    "tt0000009": tmdb(109, "No Plot", [18], overview=""),
    "tt0000010": tmdb(110, "Posterless", [10749], poster=None),
}
for movie in TMDB.values():
    movie.update(original_language="en", release_date="2009-12-10")

EXPECTED = {  # tmdb_id: (genres, poster)
    "101": ("Action|Adventure", "posters/101.jpg"),
    "102": ("Comedy", "posters/102.jpg"),
    "103": ("Drama", ""),
    "104": ("Horror", ""),
    "110": ("Romance", ""),
}


def jpeg(seed: int) -> bytes:
    rng = random.Random(seed)  # noise, so the scan data is long enough to cut
    im = Image.new("RGB", (24, 36))
    im.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(24 * 36)])
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return buf.getvalue()


def tsv_gz() -> bytes:
    lines = ["tconst\ttitleType\tprimaryTitle\toriginalTitle\tisAdult\tstartYear\tendYear\truntimeMinutes\tgenres"]
    for tconst, kind, title, adult, year in TSV_ROWS:
        lines.append("\t".join([tconst, kind, title, title, adult, year, r"\N", "100", "Drama"]))
    return gzip.compress(("\n".join(lines) + "\n").encode())


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status: int, body: bytes, kind="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlsplit(self.path)
        query, fake = parse_qs(url.query), self.server
        with fake.lock:
            fake.hits[url.path] += 1
            fake.times.append(time.monotonic())
            n = fake.hits[url.path]
        try:
            self.answer(url.path, query, n)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def answer(self, path: str, query: dict, n: int):
        if path == "/title.basics.tsv.gz":
            return self.send(200, tsv_gz(), "application/gzip")
        if path.startswith("/t/p/w185/p"):
            tmdb_id = int(path.removeprefix("/t/p/w185/p").removesuffix(".jpg"))
            body = jpeg(tmdb_id)
            if tmdb_id == 104:
                return self.send(404, b"{}")
            if tmdb_id == 103 or (tmdb_id == 102 and n == 1):
                body = body[: len(body) // 2]
            return self.send(200, body, "image/jpeg")
        if query.get("api_key") != [KEY]:
            return self.send(401, b'{"status_code": 7, "status_message": "Invalid API key"}')
        if path == "/3/genre/movie/list":
            return self.send(200, json.dumps({"genres": GENRES}).encode())
        tconst = path.removeprefix("/3/find/")
        if query.get("external_source") != ["imdb_id"] or tconst == "tt0000006":
            return self.send(404, b'{"status_code": 34}')
        if n == 1 and tconst == "tt0000002":
            return self.send(429, b'{"status_code": 25}', headers=[("Retry-After", "0")])
        if n == 1 and tconst == "tt0000004":
            return self.send(500, b"oops", "text/plain")
        if n == 1 and tconst == "tt0000003":
            time.sleep(SLOW)
        found = [TMDB[tconst]] if tconst in TMDB else []
        self.send(200, json.dumps({"movie_results": found, "person_results": [], "tv_results": []}).encode())


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # every request must stay on 127.0.0.1
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.hits, server.times, server.lock = Counter(), [], threading.Lock()
    server.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run(api, out: Path, rate=100.0, **kw) -> Counter:
    urls = {"api_base": api.base, "image_base": f"{api.base}/t/p/w185"}
    options = {"rate": rate, "retries": RETRIES, "timeout": TIMEOUT, "backoff": 0.01, **urls}
    return fetch.fetch(out, KEY, f"{api.base}/title.basics.tsv.gz", **options, **kw)


def rows(out: Path) -> list[dict]:
    with open(out / "movies.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def finds(api) -> Counter:
    return Counter({p.removeprefix("/3/find/"): n for p, n in api.hits.items() if p.startswith("/3/find/")})


@pytest.fixture
def done(api, tmp_path):
    out = tmp_path / "out"
    return out, run(api, out)


def test_writes_the_data_folder_layout(api, done):
    out, counts = done
    assert (out / "movies.csv").read_text().splitlines()[0] == ",".join(fetch.HEADER)
    got = rows(out)
    assert [r["tmdb_id"] for r in got] == list(EXPECTED)
    assert {r["tmdb_id"]: (r["genres"], r["poster"]) for r in got} == EXPECTED
    assert {r["poster_kind"] for r in got if r["poster"]} == {"en"}
    assert got[0]["overview"] == "A plot that spans two lines."
    assert got[1]["title"] == 'The "Quoted" Comedy'
    for r in got:
        if r["poster"]:
            with Image.open(out / r["poster"]) as im:
                im.load()
    assert sorted(p.name for p in (out / "posters").iterdir()) == ["101.jpg", "102.jpg"]
    assert dict(counts) == {"fetched": 2, "plot-only": 3, "skipped": 3, "failed": 0, "total": 5}
    df = read_movies(out)
    assert df.tmdb_id.tolist() == [101, 102, 103, 104, 110]
    assert df.poster.tolist() == [p for _, p in EXPECTED.values()]


def test_retries_transient_failures_but_not_404(api, done):
    assert finds(api) == Counter(
        {f"tt00000{i:02d}": n for i, n in [(1, 1), (2, 2), (3, 2), (4, 2), (5, 1), (6, 1), (9, 1), (10, 1)]}
    )  # 429, timeout and 500 once each; the tvSeries, adult title and short are never asked
    assert api.hits["/t/p/w185/p101.jpg"] == 1
    assert api.hits["/t/p/w185/p102.jpg"] == 2  # truncated once
    assert api.hits["/t/p/w185/p103.jpg"] == RETRIES  # always truncated: given up, plot-only
    assert api.hits["/t/p/w185/p104.jpg"] == 1  # 404 is final
    assert api.hits["/3/genre/movie/list"] == 1


def test_resume_asks_nothing_twice(api, done):
    out, _ = done
    before, hits = (out / "movies.csv").read_bytes(), api.hits.copy()
    counts = run(api, out)
    assert (out / "movies.csv").read_bytes() == before
    assert dict(counts) == {"fetched": 0, "plot-only": 0, "skipped": 0, "failed": 0, "total": 5}
    new = api.hits - hits
    assert new == Counter({"/3/genre/movie/list": 1})  # no /find, no poster, no IMDb download


def test_interrupted_run_completes_without_duplicates(api, tmp_path):
    out = tmp_path / "out"
    assert run(api, out, limit=2)["total"] == 2
    assert [r["tmdb_id"] for r in rows(out)] == ["101", "102"]
    with open(out / "movies.csv", "a") as f:
        f.write('999,"Cut short by a crash')  # a half-written last row
    counts = run(api, out)
    assert [r["tmdb_id"] for r in rows(out)] == list(EXPECTED)
    assert counts["total"] == 5 and counts["fetched"] + counts["plot-only"] == 3
    assert finds(api)["tt0000001"] == 1 and finds(api)["tt0000002"] == 2  # not asked again after the limit
    assert read_movies(out).tmdb_id.is_unique


def test_min_year_and_rate_limit(api, tmp_path):
    rate = 20.0
    out = tmp_path / "out"
    run(api, out, rate=rate, min_year=2005)
    assert [r["tmdb_id"] for r in rows(out)] == ["101", "102", "110"]
    assert set(finds(api)) == {"tt0000001", "tt0000002", "tt0000006", "tt0000009", "tt0000010"}
    gaps = [b - a for a, b in zip(api.times, api.times[1:])]
    assert len(gaps) >= 8
    assert statistics.median(gaps) >= 0.8 / rate  # loose: server-side arrival times jitter
    assert api.times[-1] - api.times[0] >= 0.8 * len(gaps) / rate


def test_imdb_filter_reads_local_files(tmp_path):
    gz = tmp_path / "title.basics.tsv.gz"
    gz.write_bytes(tsv_gz())
    plain = tmp_path / "title.basics.tsv"
    plain.write_bytes(gzip.decompress(tsv_gz()))
    everything = [f"tt00000{i:02d}" for i in (1, 2, 3, 4, 5, 6, 9, 10)]
    assert list(fetch.imdb_movies(gz)) == everything
    assert list(fetch.imdb_movies(plain)) == everything
    assert list(fetch.imdb_movies(gz, min_year=2009)) == ["tt0000001", "tt0000009", "tt0000010"]


def test_retry_after_header():
    class Reply:
        def __init__(self, headers):
            self.headers = headers

    assert fetch.retry_after(Reply({"Retry-After": "3"}), 0.5) == 3.0
    assert fetch.retry_after(Reply({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), 0.5) == 0.5
    assert fetch.retry_after(Reply({}), 0.5) == 0.5


def cli_args(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    fetch.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def test_cli_main_with_local_imdb_file(api, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMDB_API_KEY", KEY)
    gz = tmp_path / "title.basics.tsv.gz"
    gz.write_bytes(tsv_gz())
    out = tmp_path / "out"
    argv = ["--out", out, "--imdb", gz, "--limit", 1, "--rate", 100, "--retries", 2, "--timeout", TIMEOUT]
    argv += ["--backoff", 0.01, "--api_base", api.base, "--image_base", f"{api.base}/t/p/w185"]
    assert fetch.main(cli_args(*argv)) == 0
    assert capsys.readouterr().out.startswith("fetch: 1 fetched, 0 plot-only, 0 skipped, 0 failed;")
    assert [r["tmdb_id"] for r in rows(out)] == ["101"]
    assert api.hits["/title.basics.tsv.gz"] == 0


def test_missing_key_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TMDB_API_KEY", raising=False)
    assert fetch.main(cli_args("--out", tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TMDB_API_KEY" in err
    assert not (tmp_path / "out").exists()


def test_rejected_key_stops_without_leaking_it(api, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMDB_API_KEY", "secret-wrong-key")
    args = cli_args("--out", tmp_path / "out", "--api_base", api.base, "--imdb", f"{api.base}/title.basics.tsv.gz")
    assert fetch.main(args) == 1
    err = capsys.readouterr().err
    assert "401" in err and "secret-wrong-key" not in err
    assert api.hits["/3/genre/movie/list"] == 1 and api.hits["/title.basics.tsv.gz"] == 0
