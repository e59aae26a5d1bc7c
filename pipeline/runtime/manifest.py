"""The models folder: manifest.json and the files it names, checked before anything runs.

What a manifest must hold is written once, as data: assets/js/manifest_schema.json (JSON Schema, in the
subset `problem` below implements; assets/js/models.js implements the same subset, word for word the
same messages, and tests/test_runtime.py runs both on the same manifests). `export` writes the
folder and validates its manifest against the schema (`problem`); `predict` and `serve` read it through
`check_models`, which refuses, with a one-line message naming the file and the command that re-creates
it, a folder whose manifest does not pass the schema, that lacks a file the manifest lists, or whose
file differs from the manifest's size or sha256.
"""

import functools
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from pipeline.runtime import rules

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "assets/js/manifest_schema.json"
# how the models are re-created: `export` makes them (in its cache folder), `publish` copies them into the
# models folder (running export first when needed); `make pipeline` runs every stage
CREATE = "rebuild the models with `make pipeline` (`python -m pipeline export` makes them, `publish` copies them here)"


class ModelsMissing(RuntimeError):
    """The models folder lacks manifest.json, a file it names, or a part of the manifest predict reads."""


class ModelsChanged(ModelsMissing):
    """A model file is not the one the manifest describes (size or sha256)."""


@functools.cache
def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


# the input a row is predicted from, each with its own thresholds: the schema's required threshold lists,
# in this order (MODES[has_poster])
MODES = tuple(schema()["properties"]["thresholds"]["required"])
RULE_KEYS = tuple(schema()["properties"]["rules"]["required"])  # what manifest["rules"] must hold


# ---------------------------------------------------------------------------------------------
# The schema subset: one problem (the first, in the schema's order) or None. assets/js/models.js
# (manifestProblem) is the same code in JavaScript and must give the same messages.

TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


def is_type(value, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return kind == "number" or float(value).is_integer()  # JSON Schema: 1.0 is an integer


def where(path: list) -> str:
    """A location in the manifest, as the messages write it: keys joined by dots, list items as [i]."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out or "the manifest"


def plural(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def search(pattern: str, text: str) -> bool:
    """ECMAScript's RegExp.test: a final $ matches only at the very end (Python's $ also before a final newline)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, text) is not None


def resolve(ref: str) -> dict:
    if not ref.startswith("#/"):
        raise ValueError(f"schema: only local references are read, not {ref!r}")
    node = schema()
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def validate(value, node: dict, path: list) -> str | None:
    """The first problem of `value` against the schema `node`, or None."""
    if "$ref" in node:
        if found := validate(value, resolve(node["$ref"]), path):
            return found
    for part in node.get("allOf", ()):
        if found := validate(value, part, path):
            return found
    about = f" ({node['description']})" if "description" in node else ""
    if "type" in node:
        kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if not any(is_type(value, k) for k in kinds):
            return f"{where(path)} must be {' or '.join(TYPE_NAMES[k] for k in kinds)}{about}"
    if "enum" in node and value not in node["enum"]:
        return f"{where(path)} must be one of {', '.join(json.dumps(e) for e in node['enum'])}"
    if isinstance(value, dict):
        for key in node.get("required", ()):
            if key not in value:
                wanted = node.get("properties", {}).get(key, {})
                return f"has no {where([*path, key])}" + (
                    f" ({wanted['description']})" if "description" in wanted else ""
                )
        for key in value:
            if "propertyNames" in node and (found := validate(key, node["propertyNames"], [*path, key])):
                return found
        properties = node.get("properties", {})
        for key, sub in properties.items():
            if key in value and (found := validate(value[key], sub, [*path, key])):
                return found
        extra = node.get("additionalProperties", True)
        for key in value:
            if key in properties or extra is True:
                continue
            if extra is False:
                return f"{where([*path, key])} is not expected here"
            if found := validate(value[key], extra, [*path, key]):
                return found
    if isinstance(value, list):
        if len(value) < node.get("minItems", 0):
            return f"{where(path)} must have at least {plural(node['minItems'], 'item')}"
        if "items" in node:
            for i, item in enumerate(value):
                if found := validate(item, node["items"], [*path, i]):
                    return found
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):  # code points: models.js counts them too
            return f"{where(path)} must have at least {plural(node['minLength'], 'character')}"
        if "pattern" in node and not search(node["pattern"], value):
            return f"{where(path)} must match {node['pattern']}"
    if is_type(value, "number") and "minimum" in node and value < node["minimum"]:
        return f"{where(path)} must be at least {node['minimum']}"
    if is_type(value, "number") and "maximum" in node and value > node["maximum"]:
        return f"{where(path)} must be at most {node['maximum']}"
    return None


MISSING = object()


def at(spec, pointer: str):
    """The value at a JSON pointer, or MISSING."""
    node = spec
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def weights_name(graph: str, suffix: str) -> str:
    """NAME.weights for NAME.onnx (Path.with_suffix; models.js computes the same)."""
    dot = graph.rfind(".")
    return (graph[:dot] if dot > 0 else graph) + suffix


def weights_problem(spec) -> str | None:
    """x-checks.weights_beside_graph, on whatever entries are there (it runs before the schema)."""
    rule = schema()["x-checks"]["weights_beside_graph"]
    for pointer in rule["pointers"]:
        entry = at(spec, pointer)
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and isinstance(entry.get("weights_file"), str)
        ):
            if entry["weights_file"] != (want := weights_name(entry["file"], rule["suffix"])):
                return f"the weights file of {entry['file']} must be {want}, not {entry['weights_file']}"
    return None


def problem(spec) -> str | None:
    """What is wrong with a manifest (the first thing, in the schema's order), or None: the schema, then
    its x-checks. The files themselves are not read here (check_models does)."""
    if found := weights_problem(spec):
        return found
    if found := validate(spec, schema(), []):
        return found
    checks = schema()["x-checks"]
    for pointer in checks["listed_in_files"]["pointers"]:
        name = at(spec, pointer)
        if isinstance(name, str) and name not in spec["files"]:
            return f"{where(pointer.split('/')[1:])} names {name}, which files does not list"
    for pointer in checks["one_per_label"]["pointers"]:
        values = at(spec, pointer)
        if values is not MISSING and len(values) != len(spec["labels"]):
            path = where(pointer.split("/")[1:])
            return f"{path} has {len(values)} values for {len(spec['labels'])} labels ({checks['one_per_label']['description']})"
    return None


# ---------------------------------------------------------------------------------------------
# The folder.


def file_problem(path: Path, info: dict, data: bytes | None = None) -> str | None:
    """Why the file at `path` is not the one the manifest describes ({bytes, sha256}), or None.
    `data`: its bytes, when already read."""
    size = len(data) if data is not None else path.stat().st_size
    if size != info["bytes"]:
        return f"model file {path} is {size} bytes, not the manifest's {info['bytes']}"
    digest = hashlib.sha256(data) if data is not None else file_sha256(path)
    if digest.hexdigest() != info["sha256"]:
        return (
            f"model file {path} does not match the manifest (sha256 {digest.hexdigest()[:12]}..., "
            f"manifest {info['sha256'][:12]}...)"
        )
    return None


def file_sha256(path: Path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256")


def read_model_file(models: Path, spec: dict, name: str) -> bytes:
    """A model file's bytes, checked against the manifest's size and sha256 (what is checked is what runs)."""
    path = Path(models) / name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelsMissing(f"model file {path} cannot be read ({e.strerror or e}); {CREATE}") from None
    if found := file_problem(path, spec["files"][name], data):
        raise ModelsChanged(f"{found}; {CREATE}")
    return data


def check_models(models: Path, verify: bool = True) -> dict:
    """The manifest, after checking it against the schema, that every file it lists is there and (verify)
    has the manifest's size and sha256, and that its rules are ones this code applies. ModelsMissing
    (ModelsChanged for a changed file) says what is wrong, naming the file and the command that re-creates it."""
    path = Path(models) / "manifest.json"
    if not path.is_file():
        raise ModelsMissing(f"no models at {path}; {CREATE}")
    try:
        spec = json.loads(path.read_bytes(), parse_constant=not_json)
    except ValueError as e:  # also bytes that are not UTF-8
        raise ModelsMissing(f"{path} is not JSON ({e}); {CREATE}") from None
    if found := problem(spec):
        raise ModelsMissing(f"{path}: {found}; {CREATE}")
    for name, info in spec["files"].items():
        file = Path(models) / name
        if not file.is_file():
            raise ModelsMissing(f"model file {file} is missing; {CREATE}")
        if verify and (found := file_problem(file, info)):
            raise ModelsChanged(f"{found}; {CREATE}")
    try:
        check_rules(spec["rules"], len(spec["labels"]), spec["text_encoder"]["max_len"])
    except ValueError as e:
        raise ModelsMissing(f"{path}: {e}; {CREATE}") from None
    return spec


def not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def check_rules(rule: dict, genres: int, max_len: int) -> None:
    """ValueError when a rule is one this code cannot apply (rules.decide knows the decision rules, rules.POOLS
    the poolings); `max_len`: the text encoder's window (text_encoder.max_len)."""
    rules.decide(np.zeros(genres), np.zeros(genres), rule["decision"])
    try:
        re.compile(rule["sentence_pattern"])
    except re.error as e:
        raise ValueError(f"sentence pattern {rule['sentence_pattern']!r} is not a regular expression ({e})") from None
    check_windows(rule.get("windows"), max_len)


def check_windows(windows, max_len: int) -> None:
    """ValueError unless rules.windows is a rule rules.windows and rules.pool apply as written: whole numbers,
    windows of the encoder's max_len, a stride that skips no token, a known pooling."""
    if not isinstance(windows, dict):
        raise ValueError("has no rules.windows (how a text is cut into the encoder's windows and pooled)")
    for key in ("max_chars", "max_len", "stride"):
        value = windows.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"rules.windows.{key} must be an integer of at least 1, not {value!r}")
    if windows["max_len"] != max_len:
        raise ValueError(f"rules.windows.max_len {windows['max_len']} is not text_encoder.max_len {max_len}")
    width = max_len - 2  # a window's text tokens: [CLS] and [SEP] take two of its ids
    if windows["stride"] > width:
        raise ValueError(
            f"rules.windows.stride {windows['stride']} is over a window's {width} text tokens "
            "(max_len - 2): the tokens between two windows would never be read"
        )
    if windows.get("pool") not in rules.POOLS:
        raise ValueError(f"rules.windows.pool {windows.get('pool')!r} is not one of {', '.join(rules.POOLS)}")


def mode_thresholds(spec: dict) -> dict[str, np.ndarray]:
    """{"plot": [G], "plot+poster": [G]}: per-genre thresholds for each input mode."""
    return {mode: np.array(spec["thresholds"][mode], dtype=np.float32) for mode in MODES}
