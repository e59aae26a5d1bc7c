"""The shared rules, Python (pipeline/rules.py) against JavaScript (assets/js/rules.js, run by node), on the same cases.

The JS side reads every constant from the rules block export.py writes into manifest.json; here it is
given pipeline/rules.RULES itself, so a difference can only come from the two implementations.
"""

import json
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.runtime import rules
from tests.conftest import ROOT

RULES = rules.RULES
TRUNC8 = rules.truncation(8)
CLIP5 = {**RULES["truncation"], "max_chars": 5}

# (function, args for both sides)
DECIDE = [
    ("tie at threshold", [0.3, 0.5, 0.1], [0.3, 0.6, 0.2]),
    ("just under", [0.29999999, 0.7], [0.3, 0.8]),
    ("none over: most likely", [0.1, 0.25, 0.2], [0.5, 0.5, 0.5]),
    ("none over, tied maxima: the first", [0.2, 0.2, 0.1], [0.5, 0.5, 0.5]),
    ("all over", [0.9, 0.8, 0.7], [0.1, 0.1, 0.1]),
    ("float32 probability vs float64 threshold", [float(np.float32(0.29)), 0.0], [0.29, 0.5]),
    ("zeros", [0.0, 0.0], [0.0, 0.1]),
    ("one genre", [0.01], [0.5]),
]
SENTENCES = [
    "",
    "No terminal punctuation at all",
    "Mr. Smith goes to Washington. He stays!",
    "Wait... what?! Yes.",
    "An ellipsis character… then more. Done",
    "Emoji 🎬 here. And 👍🏽 there! 🍿",
    "Trailing spaces.   ",
    "   Leading spaces. x",
    "Line\nbreaks.\nNext line.\n\nParagraph",
    "?!",
    "...",
    "a.\x1cb.\x85c.\ufeffd.\u3000e.\u00a0f",
    "Tabs.\tand\rreturns.\x0bvt.\x0cff",
    "Dr.Who? no space.Next",
]
TRUNCATE = [list(range(n)) for n in (0, 1, 7, 8, 9, 10, 300)]
CLIP = ["", "abcde", "abcdef", "ab🎬cdef", "abcd🎬e", "abcde🎬", "🎬🎬🎬🎬🎬🎬", "a👍🏽bcd", "é́x" * 3]
HEAD5_TAIL3 = {**TRUNC8, "head_tokens": 5, "tail_tokens": 3}  # a rule other than rules.truncation's shape


def python(fn: str, args: list):
    if fn == "decide":
        return rules.decide(np.array(args[0]), np.array(args[1]), args[2]).tolist()
    if fn == "sentences":
        return rules.sentences(*args)
    if fn == "truncate":
        return rules.truncate(*args)
    if fn == "clip":
        return args[0][: args[1]["max_chars"]]
    raise ValueError(fn)


CASES = (
    [(f"decide: {name}", "decide", [p, t, RULES["decision"]]) for name, p, t in DECIDE]
    + [(f"sentences: {s!r}", "sentences", [s, RULES["sentence_pattern"]]) for s in SENTENCES]
    + [(f"truncate: {len(ids)} ids, max_len 8", "truncate", [ids, TRUNC8]) for ids in TRUNCATE]
    + [("truncate: max_len+1 at 256", "truncate", [list(range(257)), rules.truncation(256)])]
    + [(f"clip: {s!r} to 5 characters", "clip", [s, CLIP5]) for s in CLIP]
    + [(f"truncate: {len(ids)} ids, head 5 + tail 3", "truncate", [ids, HEAD5_TAIL3]) for ids in TRUNCATE]
)

NODE = """
import * as rules from %s;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map(([fn, args]) => {
  try { return { value: rules[fn](...args) }; } catch (e) { return { error: String(e) }; }
});
process.stdout.write(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def javascript():
    node = shutil.which("node")
    assert node is not None, "node is not installed (make test installs it): the browser half cannot be compared"
    src = NODE % json.dumps((ROOT / "assets/js/rules.js").as_uri())
    payload = json.dumps([[fn, args] for _, fn, args in CASES], ensure_ascii=True)
    proc = subprocess.run(
        [node, "--input-type=module", "-e", src], input=payload, capture_output=True, text=True, check=True
    )
    return dict(zip((name for name, _, _ in CASES), json.loads(proc.stdout)))


@pytest.mark.parametrize("name,fn,args", CASES, ids=[name for name, _, _ in CASES])
def test_javascript_rules_equal_python_rules(javascript, name, fn, args):
    got = javascript[name]
    assert "error" not in got, got["error"]
    assert got["value"] == python(fn, args)


def test_decide_refuses_a_rule_it_does_not_know(javascript):
    # both sides refuse a rule they do not implement rather than guess
    with pytest.raises(ValueError):
        rules.decide(np.array([0.5]), np.array([0.5]), {"predict_when": "probability > threshold"})
    src = NODE % json.dumps((ROOT / "assets/js/rules.js").as_uri())
    payload = json.dumps([["decide", [[0.5], [0.5], {"predict_when": "probability > threshold"}]]])
    out = subprocess.run(
        ["node", "--input-type=module", "-e", src], input=payload, capture_output=True, text=True, check=True
    )
    assert "error" in json.loads(out.stdout)[0]
