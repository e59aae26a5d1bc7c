import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiny_data

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The tiny run: small enough for CI, real enough to exercise every stage.
TINY = [
    "--min_genre_count",
    "3",
    "--fusion_epochs",
    "30",
    "--fusion_hidden",
    "64",
    "--patience",
    "30",
    "--max_len",
    "64",
]


def cli(*args, check=True, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pipeline {args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


class TinyRun:
    def __init__(self, base: Path):
        self.base = base
        self.data = tiny_data.make(base / "data")
        self.work, self.site_data, self.models = base / "cache", base / "_data", base / "models"

    def args(self, stage: str, *extra) -> list:
        paths = ["--data", self.data, "--work", self.work, "--site_data", self.site_data, "--models", self.models]
        return [stage, *paths, *TINY, *extra]

    def run(self, stage: str = "all", *extra) -> subprocess.CompletedProcess:
        return cli(*self.args(stage, *extra))

    def json(self, name: str) -> dict:
        return json.loads((self.site_data / name).read_text())


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyRun:
    run = TinyRun(tmp_path_factory.mktemp("tiny"))
    run.first = run.run("all")
    return run
