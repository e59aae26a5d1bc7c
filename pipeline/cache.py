"""Stage outputs cached by content: a stage's folder is named by a hash of everything it reads.

A stage calls `cached(cfg, name, parts, build)`. `parts` holds its config values, the keys of the
stages it reads and the source of the code that computes it, so a change to any of them gives a
new folder and a re-run; nothing changed means the folder exists and `build` is skipped.
"""

import ast
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm


def digest(obj) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_seen: dict[tuple, str] = {}  # files_digest results in this process, by the files' names, sizes and mtimes


def files_digest(paths: list, desc: str = "hashing") -> str:
    """One digest over many files' names and contents (posters, say).

    Every stage asks for its upstream stages' keys, so one run asks for the same folder's digest
    many times: unchanged files (same size and mtime) are not read again within a process. Paths as
    strings and one os.stat each: pathlib's objects made the check alone ~0.1 s for 4,000 posters."""
    names = sorted(map(str, paths))
    stamp = tuple((p, st.st_size, st.st_mtime_ns) for p in names for st in (os.stat(p),))
    if stamp in _seen:
        return _seen[stamp]
    h = hashlib.sha256()
    for p in tqdm(names, desc=desc, leave=False, disable=len(names) < 500):
        h.update(os.path.basename(p).encode())
        h.update(file_digest(p).encode())
    _seen[stamp] = h.hexdigest()[:16]
    return _seen[stamp]


def source_digest(*files: str) -> str:
    """The code that computes a stage is part of its key: its syntax tree, without docstrings, so that
    comments, docstrings and blank lines (which compute nothing) change without re-running a stage."""
    return digest([code_tree(Path(f).read_text()) for f in files])


def code_tree(text: str) -> str:
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)  # no line numbers: code moved down a line is the same code


class Output:
    """A finished stage folder and the key that names it."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key

    def __truediv__(self, name: str) -> Path:
        return self.path / name


def stage_parts(code: str, config: dict, **upstream: Output) -> dict:
    """What names a stage's folder: the keys of the stages it reads, its config values and its code."""
    return {**{name: out.key for name, out in upstream.items()}, "config": config, "code": code}


def cached(cfg, name: str, parts: dict, build: Callable[[Path], None]) -> Output:
    key = digest(parts)
    path = cfg.path("work") / name / key
    locks = cfg.path("work") / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    # one builder per stage folder: a second run waits, then finds the first one's result
    with open(locks / f"{name}-{key}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_once(name, path, key, parts, build)


def build_once(name: str, path: Path, key: str, parts: dict, build: Callable[[Path], None]) -> Output:
    if (path / ".done").exists():
        print(f"[{name}] cached: {path}")
        return Output(path, key)
    tmp = path.with_name(key + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"[{name}] running -> {path}")
    build(tmp)
    (tmp / ".done").write_text(json.dumps(parts, indent=1, sort_keys=True, default=str))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return Output(path, key)
