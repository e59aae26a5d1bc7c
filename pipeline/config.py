"""One flat config: defaults from config.toml, overridden by --key value on the command line."""

import argparse
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "config.toml"


class Config(dict):
    """A dict with attribute access, so stages read `cfg.max_len`."""

    __getattr__ = dict.__getitem__

    def path(self, key: str) -> Path:
        """A path-valued key, resolved against the repository root."""
        p = Path(self[key])
        return p if p.is_absolute() else ROOT / p

    def subset(self, *keys: str) -> dict:
        return {k: self[k] for k in keys}


def load(path: Path = DEFAULT_FILE) -> Config:
    with open(path, "rb") as f:
        return Config(tomllib.load(f))


def add_overrides(parser: argparse.ArgumentParser, defaults: Config) -> None:
    """One --flag per config key, typed like its default."""
    group = parser.add_argument_group("config overrides (defaults from config.toml)")
    group.add_argument("--config", type=Path, default=DEFAULT_FILE, help="config file")
    for key, value in defaults.items():
        kind = type(value)
        if kind is bool:
            kind = lambda s: s.lower() in ("1", "true", "yes")  # noqa: E731
        group.add_argument(f"--{key}", type=kind, default=None, help=f"default: {value}")


def from_args(args: argparse.Namespace) -> Config:
    cfg = load(args.config)
    for key in list(cfg):
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    return cfg
