"""The shared rules, Python (pipeline/runtime/rules.py) against JavaScript (assets/js/rules.js, run by node), on
the same cases.

The JS side reads every constant from the rules block export.py writes into manifest.json; here it is
given pipeline/rules.RULES itself, so a difference can only come from the two implementations.
"""

import json
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.runtime import manifest, rules
from tests.conftest import ROOT

RULES = rules.RULES
CLIP5 = {**RULES["windows"], "max_chars": 5}

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
CLIP = ["", "abcde", "abcdef", "ab🎬cdef", "abcd🎬e", "abcde🎬", "🎬🎬🎬🎬🎬🎬", "a👍🏽bcd", "é́x" * 3]


def window_rules(max_len: int) -> dict[str, dict]:
    """rules.windows for an encoder of max_len ids, by stride: no overlap (max_len - 2, the widest that reads
    every token), an overlap of a quarter or so (190 of 254, shipped before 254), and 1 (a window per token)."""
    width = max_len - 2
    return {f"stride {s}": rules.truncation(max_len, s) for s in dict.fromkeys((width, max(1, width * 3 // 4), 1))}


# token counts (special tokens included) around each window size: none, only special tokens, one text token,
# one under, at and over the window, and several windows
LENGTHS = {8: [0, 1, 2, 3, 7, 8, 9, 10, 17, 300, 1000], 256: [0, 1, 2, 255, 256, 257, 300, 1000]}


def ids_of(n: int) -> list[int]:
    """n token ids: [CLS]-like first, [SEP]-like last, distinct text ids between (a misplaced slice shows)."""
    return [101, *range(1000, 1000 + n - 2), 102] if n >= 2 else [101][:n]


def spans(n: int, rule: dict) -> dict[str, tuple[int, int]]:
    """Text-token spans [start, end) of a text of n ids to leave out: at its start and end, across a window
    boundary, inside an overlap of two windows, the whole text, past the text, and empty."""
    body = max(0, n - 2)
    starts = rules.window_starts(body, rule)
    width = rule["max_len"] - 2
    out = {"first token": (0, 1), "start": (0, 3), "end": (max(0, body - 3), body), "empty": (2, 2)}
    if len(starts) > 1:
        edge = starts[0] + width  # where the first window ends
        out["across the first window's end"] = (edge - 2, edge + 2)
        if starts[1] < edge:  # the first two windows overlap in [starts[1], edge)
            out["inside an overlap"] = (starts[1], min(edge, starts[1] + 2))
        out["the whole text"] = (0, body)
    out["past the text"] = (body, body + 5)
    return out


WINDOW_CASES = [
    (f"{fn}: {n} ids, max_len {max_len}, {name}", fn, [n, rule] if fn == "window_starts" else [ids_of(n), rule])
    for max_len, lengths in LENGTHS.items()
    for name, rule in window_rules(max_len).items()
    for n in lengths
    for fn in ("window_starts", "windows")
] + [
    (f"windows_without: {n} ids, max_len {max_len}, {name}, {where}", "windows_without", [ids_of(n), rule, a, b])
    for max_len, lengths in LENGTHS.items()
    for name, rule in window_rules(max_len).items()
    for n in lengths
    for where, (a, b) in spans(n, rule).items()
]

# the text tokens each window_without case leaves out, counted (rerun_tokens) rather than built
RERUN_CASES = [
    (name.replace("windows_without", "rerun_tokens", 1), "rerun_tokens", [len(args[0]), *args[1:]])
    for name, fn, args in WINDOW_CASES
    if fn == "windows_without"
]


def sentence_ends(lengths: list[int]) -> list[int]:
    """n(0) = 0, n(1), ..., n(m): the text-token boundaries of sentences of these token counts."""
    return np.cumsum([0, *lengths]).tolist()


def ends_of(n_ids: int, m: int, seed: int) -> list[int]:
    """m sentence boundaries over a text of n_ids ids (special tokens included), random lengths (some 0)."""
    cuts = sorted(np.random.default_rng(seed).integers(0, n_ids - 1, m - 1).tolist())
    return [0, *cuts, n_ids - 2]


W256, W8 = window_rules(256), window_rules(8)
STRIDE_190 = W256["stride 190"]  # the overlap shipped before
# (name, ends, n_ids, rule, max_tokens): the explanation's passages (rules.passages) in each of its branches
PASSAGES = [
    ("no sentence", [0], 10, W256["stride 254"], 2048),
    ("one sentence", [0, 8], 10, W256["stride 254"], 1),
    ("two sentences over budget: each alone (m < 3)", [0, 500, 998], 1000, W256["stride 254"], 1),
    ("50 words, 4 sentences in one window: alone", sentence_ends([14, 17, 12, 20]), 65, W256["stride 254"], 2048),
    ("one window, 10 sentences, over budget: grouped", sentence_ends([20] * 10), 202, W256["stride 254"], 500),
    ("one window (n_ids = max_len), tiny budget: k = 2", sentence_ends([50] * 5 + [4]), 256, W256["stride 254"], 1),
    ("the 700-word plot's size at stride 254", ends_of(888, 34, 1), 888, W256["stride 254"], 2048),
    ("the 700-word plot's size at stride 190", ends_of(888, 34, 1), 888, STRIDE_190, 2048),
    ("886 tokens at stride 190, a budget of 1,024", ends_of(888, 34, 2), 888, STRIDE_190, 1024),
    ("886 tokens at stride 254, a budget of 4,096", ends_of(888, 34, 3), 888, W256["stride 254"], 4096),
    ("886 tokens at stride 190, a budget of 3,000", ends_of(888, 34, 4), 888, STRIDE_190, 3000),
    ("max_chars' ~4,500 tokens, 300 sentences at stride 254", ends_of(4500, 300, 5), 4500, W256["stride 254"], 2048),
    ("~4,500 tokens, 300 sentences at stride 190", ends_of(4500, 300, 6), 4500, STRIDE_190, 2048),
    ("~4,500 tokens at stride 190, max_tokens 1: nothing fits, k = 2", ends_of(4500, 300, 11), 4500, STRIDE_190, 1),
    ("3 long sentences over budget: k = 2", sentence_ends([300, 300, 300]), 902, W256["stride 254"], 100),
    ("empty spans (equal ends), grouped", [0, 5, 5, 5, 40, 40, 300, 300, 600, 600], 602, STRIDE_190, 400),
    ("empty spans, alone", [0, 0, 3, 3, 10, 10], 12, W256["stride 254"], 2048),
    ("no tokens at all", [0, 0, 0, 0, 0], 2, W256["stride 254"], 1),
    ("max_tokens 1", ends_of(888, 34, 7), 888, W256["stride 254"], 1),
    ("windows of 8 ids, stride 6, 40 sentences", ends_of(300, 40, 8), 300, W8["stride 6"], 60),
    ("windows of 8 ids, stride 4, 40 sentences", ends_of(300, 40, 9), 300, W8["stride 4"], 200),
    ("windows of 8 ids, stride 1, 12 sentences", ends_of(100, 12, 10), 100, W8["stride 1"], 300),
]
PASSAGE_CASES = [(f"passages: {name}", "passages", [ends, n, rule, budget]) for name, ends, n, rule, budget in PASSAGES]

# rules.windows that pass the schema, as check_windows (Python) and windows_problem (JS) read them against
# the encoder's max_len of 256
WINDOWS_PROBLEMS = {
    "the shipped windows": ({**RULES["windows"], "max_len": 256, "stride": 254}, 256),
    "stride 1": (rules.truncation(256, 1), 256),
    "stride 255: a token between windows never read": (rules.truncation(256, 255), 256),
    "max_len 128, the encoder's 256": (rules.truncation(128), 256),
    "max_len 256, the encoder's 512": (rules.truncation(256), 512),
}
PROBLEM_CASES = [(f"windows_problem: {name}", "windows_problem", list(args)) for name, args in WINDOWS_PROBLEMS.items()]

# values per window, embeddings or probabilities (pooled alike), some awkward in float32
_rng = np.random.default_rng(28)
POOLED = {
    "one window": [[0.25, -1.5, 3.0]],
    "two windows": [[0.1, 0.2, 0.3], [0.7, 0.05, 0.3]],
    "five windows of 384 values": _rng.standard_normal((5, 384)).astype(np.float32).tolist(),
    "19 windows of 18 probabilities": _rng.uniform(0, 1, (19, 18)).astype(np.float32).tolist(),
    "float64 values rounded to float32": [[1 / 3, 2 / 3], [1e-8, 1 - 1e-8]],
}
POOL_CASES = [(f"pool: {how}, {name}", "pool", [values, how]) for how in rules.POOLS for name, values in POOLED.items()]


def python(fn: str, args: list):
    if fn == "decide":
        return rules.decide(np.array(args[0]), np.array(args[1]), args[2]).tolist()
    if fn == "sentences":
        return rules.sentences(*args)
    if fn in ("window_starts", "windows"):
        return getattr(rules, fn)(*args)
    if fn == "windows_without":  # JSON's object keys are strings
        return {str(k): v for k, v in rules.windows_without(*args).items()}
    if fn == "pool":
        return rules.pool(*args).tolist()
    if fn == "clip":
        return args[0][: args[1]["max_chars"]]
    if fn == "rerun_tokens":
        return rules.rerun_tokens(*args)
    if fn == "passages":  # tuples as JSON's lists
        return [list(p) for p in rules.passages(*args)]
    if fn == "windows_problem":  # what manifest.check_windows refuses, in its words; None when it passes
        try:
            manifest.check_windows(*args)
        except ValueError as e:
            return str(e)
        return None
    raise ValueError(fn)


CASES = (
    [(f"decide: {name}", "decide", [p, t, RULES["decision"]]) for name, p, t in DECIDE]
    + [(f"sentences: {s!r}", "sentences", [s, RULES["sentence_pattern"]]) for s in SENTENCES]
    + [(f"clip: {s!r} to 5 characters", "clip", [s, CLIP5]) for s in CLIP]
    + WINDOW_CASES
    + RERUN_CASES
    + PASSAGE_CASES
    + PROBLEM_CASES
    + POOL_CASES
)

NODE = """
import * as rules from %s;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map(([fn, args]) => {
  try {
    const value = rules[fn](...args);
    return { value: ArrayBuffer.isView(value) ? Array.from(value) : value }; // a Float32Array as a list
  } catch (e) { return { error: String(e) }; }
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
    expected = python(fn, args)
    if fn == "pool" and args[1].startswith("mean"):
        # float32 on both sides, but a mean's sum in another order (numpy adds float32 rows one by one, JS
        # in float64, rounded once): an ulp or two of values under 4 in size
        assert np.allclose(got["value"], expected, rtol=0, atol=1e-6), name
    else:  # ids, and a maximum (one of the values): exactly
        assert got["value"] == expected


def test_the_window_cases_reach_every_branch():
    """The cases above hold one window and many, and spans left out of no window, of one and of two."""
    windows = [len(python(fn, args)) for _, fn, args in WINDOW_CASES if fn == "windows"]
    assert {1, 2} <= set(windows) and max(windows) > 100
    touched = [len(python(fn, args)) for _, fn, args in WINDOW_CASES if fn == "windows_without"]
    assert {0, 1, 2} <= set(touched)


def test_pool_refuses_a_pooling_it_does_not_know():
    with pytest.raises(ValueError):
        rules.pool(np.zeros((2, 3)), "median_embedding")
    src = NODE % json.dumps((ROOT / "assets/js/rules.js").as_uri())
    payload = json.dumps([["pool", [[[0.0], [1.0]], "median_embedding"]]])
    out = subprocess.run(
        ["node", "--input-type=module", "-e", src], input=payload, capture_output=True, text=True, check=True
    )
    assert "error" in json.loads(out.stdout)[0]


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


def test_rerun_tokens_counts_what_windows_without_builds():
    """Inside the text, rerun_tokens is the ids of the windows windows_without re-runs (the passages' cost)."""
    inside = [args for _, fn, args in WINDOW_CASES if fn == "windows_without" and args[3] <= len(args[0]) - 2]
    for ids, rule, a, b in inside:
        built = sum(map(len, rules.windows_without(ids, rule, a, b).values()))
        assert rules.rerun_tokens(len(ids), rule, a, b) == built, (len(ids), rule, a, b)


def test_the_passage_cases_reach_every_branch():
    """Sentences alone within budget and over it (m < 3), grouped with k over 2, and the k = 2 fallback over
    budget; every case's passages cover its sentences in order, each once."""
    kinds = set()
    for name, ends, n, rule, budget in PASSAGES:
        parts, m = rules.passages(ends, n, rule, budget), len(ends) - 1
        assert [i for i, _ in parts] + [m] == [0] + [j for _, j in parts] if parts else m == 0, name
        over = sum(rules.rerun_tokens(n, rule, ends[i], ends[j]) for i, j in parts) > budget
        if len(parts) == m:
            kinds.add("alone, over budget" if over else "alone")
        else:
            kinds.add("k = 2, over budget" if over else f"grouped, {'2' if len(parts) == 2 else 'more'} passages")
    assert kinds == {"alone", "alone, over budget", "grouped, more passages", "k = 2, over budget"}, kinds
    several = {rule["stride"] for _, _, n, rule, _ in PASSAGES if len(rules.window_starts(n - 2, rule)) > 1}
    assert {190, 254} <= several  # texts of several windows at both strides, overlapping and not


def random_passage_cases(count: int, seed: int = 29) -> list[list]:
    """[ends, n_ids, rule, max_tokens]: windows of 8, 16 or 256 ids at any stride, up to 40 sentences (some
    of no tokens), budgets from 1 to over what leaving each sentence out alone costs."""
    rng, cases = np.random.default_rng(seed), []
    for _ in range(count):
        max_len = int(rng.choice([8, 16, 256]))
        rule = rules.truncation(max_len, int(rng.integers(1, max_len - 1)))
        n_ids = int(rng.integers(3, 6 * max_len))
        m = int(rng.integers(0, 41))
        ends = [0, *sorted(rng.integers(0, n_ids - 1, m).tolist())][: m + 1]
        alone = sum(rules.rerun_tokens(n_ids, rule, a, b) for a, b in zip(ends, ends[1:]))
        cases.append([ends, n_ids, rule, int(rng.integers(1, max(2, alone * 6 // 5)))])
    return cases


def test_passages_equal_python_on_random_cases():
    """rules.js sums the parts' cost by windows shared (costTerms) and stops a k once it is over budget;
    Python sums rerun_tokens part by part: the same parts, on 2,000 random cases."""
    cases = random_passage_cases(2000)
    src = NODE % json.dumps((ROOT / "assets/js/rules.js").as_uri())
    payload = json.dumps([["passages", args] for args in cases])
    out = subprocess.run(
        ["node", "--input-type=module", "-e", src], input=payload, capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    grouped = 0
    for args, js in zip(cases, got):
        expected = [list(p) for p in rules.passages(*args)]
        assert js == {"value": expected}, args
        grouped += len(expected) < len(args[0]) - 1
    assert grouped > 500  # most cases group sentences: the branch costTerms serves
