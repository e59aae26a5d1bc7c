"""The models folder: manifest.json and the files it names, checked before anything runs.

`export` writes the folder; `predict` and `serve` read it through `check_models`, which refuses,
with a one-line message naming the command that makes the models, a folder that lacks a file or a
part of the manifest this code reads (the shared rules, per-mode thresholds).
"""

import json
import re
from pathlib import Path

import numpy as np

from pipeline.runtime import packed_weights, rules

MODES = ("plot", "plot+poster")  # the input a row is predicted from; each has its own thresholds
CREATE = "python -m pipeline export"  # the command that writes the models
RULE_KEYS = ("decision", "sentence_pattern", "truncation")  # what predict reads from manifest["rules"]


class ModelsMissing(RuntimeError):
    """The models folder lacks manifest.json, a file it names, or a part of the manifest predict reads."""


def check_models(models: Path) -> dict:
    """The manifest, after checking that it and every file it ships exist and that it carries the
    rules and per-mode thresholds; ModelsMissing says what is not there."""
    path = Path(models) / "manifest.json"
    if not path.is_file():
        raise ModelsMissing(f"no models at {path}; create them with `{CREATE}`")
    spec = json.loads(path.read_text())
    for name in spec.get("files", {}):
        if not (Path(models) / name).is_file():
            raise ModelsMissing(f"model file {Path(models) / name} is missing; create it with `{CREATE}`")
    for entry in spec.values():  # a graph's packed weights file: Python finds it beside the graph, by this name
        if isinstance(entry, dict) and entry.get("weights_file"):
            if entry["weights_file"] != (want := packed_weights.blob_path(Path(entry["file"])).name):
                raise ModelsMissing(
                    f"{path}: the weights file of {entry['file']} must be {want}; re-create it with `{CREATE}`"
                )
    missing = [key for key in RULE_KEYS if key not in spec.get("rules", {})]
    if missing:
        raise ModelsMissing(f"{path} has no rules ({', '.join(missing)}); re-create the models with `{CREATE}`")
    thresholds = spec.get("thresholds")
    if not isinstance(thresholds, dict) or any(len(thresholds.get(m, ())) != len(spec["labels"]) for m in MODES):
        raise ModelsMissing(f"{path} lacks per-mode thresholds ({', '.join(MODES)}); re-create them with `{CREATE}`")
    check_rules(spec["rules"], len(spec["labels"]))
    return spec


def check_rules(rule: dict, genres: int) -> None:
    """ValueError when a rule is one this code cannot apply (rules.decide knows the decision rules)."""
    rules.decide(np.zeros(genres), np.zeros(genres), rule["decision"])
    try:
        re.compile(rule["sentence_pattern"])
    except re.error as e:
        raise ValueError(f"sentence pattern {rule['sentence_pattern']!r} is not a regular expression ({e})") from None
    if not {"max_chars", "max_len", "head_tokens", "tail_tokens"} <= set(rule["truncation"]):
        raise ValueError(f"truncation rule {rule['truncation']!r} lacks max_chars, max_len, head_tokens or tail_tokens")


def mode_thresholds(spec: dict) -> dict[str, np.ndarray]:
    """{"plot": [G], "plot+poster": [G]}: per-genre thresholds for each input mode."""
    return {mode: np.array(spec["thresholds"][mode], dtype=np.float32) for mode in MODES}
