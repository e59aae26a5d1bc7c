import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiny_data

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The tiny run: small enough for CI, real enough to exercise every stage.
TINY = [
    *(
        "--min_genre_count",
        "3",
        "--max_len",
        "64",
        "--window_strides",
        "62,46",  # max_len - 2 (no overlap, as config.toml's) and a quarter read twice: the stride choice runs
        "--topic_min_size",
        "5",
        "--gradcam_posters",
        "2",
        "--sample_rows",
        "3",
    ),
    *("--epochs", "2", "--batch", "8"),  # text fine-tuning
    *("--extra_validation_source", "snapshot_a"),
    *(
        "--fusion_epochs",
        "30",
        "--fusion_hidden",
        "64",
        "--patience",
        "30",
        "--fusion_lr",
        "0.002",
        "--fusion_dropout",
        "0.2",
    ),
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
        self.extra = tiny_data.make_extra(base / "extra")
        self.storylines = tiny_data.make_storylines(base / "storylines", self.data)
        self.long_plots = tiny_data.make_long_plots(base / "long_plots", self.data)
        self.work, self.site_data, self.models = base / "cache", base / "_data", base / "models"
        self.figures = base / "figures"

    def args(self, stage: str, *extra) -> list:
        paths = [
            "--data",
            self.data,
            "--extra",
            self.extra,
            "--storylines",
            self.storylines,
            "--long_plots",
            self.long_plots,
            "--work",
            self.work,
            "--site_data",
            self.site_data,
            "--models",
            self.models,
            "--figures",
            self.figures,
        ]
        return [stage, *paths, *TINY, *extra]

    def run(self, stage: str = "all", *extra) -> subprocess.CompletedProcess:
        return cli(*self.args(stage, *extra))

    def stage(self, name: str) -> Path:
        """The folder the first full run used for a stage (later tests may add others beside it)."""
        (path,) = set(re.findall(rf"^\[{name}\] (?:running ->|cached:) (\S+)$", self.first.stdout, re.M))
        return Path(path)

    def json(self, name: str) -> dict:
        return json.loads((self.site_data / name).read_text())


def tiny_config(tiny: TinyRun, **extra):
    """The tiny run's configuration (TINY's flags and the run's folders) as a Config, for calling a stage's
    functions directly."""
    from pipeline import config

    cfg = config.load()
    for flag, value in zip(TINY[::2], TINY[1::2]):
        key = flag.removeprefix("--")
        cfg[key] = type(cfg[key])(value)
    cfg.update(data=str(tiny.data), work=str(tiny.work), site_data=str(tiny.site_data), models=str(tiny.models))
    cfg.update(extra=str(tiny.extra), threads=1, **extra)
    return cfg


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyRun:
    run = TinyRun(tmp_path_factory.mktemp("tiny"))
    run.first = run.run("all")
    return run
