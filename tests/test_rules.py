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

from pipeline.runtime import bag, manifest, rules
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


# ---- the bag of words: pipeline/runtime/bag.py against assets/js/bag.js -------------------------------------

BAG_TERMS = [
    *("smith", "goes", "washington", "goes washington", "emoji", "here", "spider", "man", "spider man", "οδος"),
    *("café", "stanbul", "__init__", "007", "٣٤٥", "don", "rock roll", "detective", "clue", "detective finds"),
    *("finds clue", "abcde", "__proto__", "constructor"),
]
BAG_STOP = ["the", "to", "and", "he", "of", "it", "a", "in", "vs"]


BAG_GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance"]


def small_bag(max_chars: int, seed: int = 30) -> tuple[dict, bytes, dict]:
    """(bag_of_words.json, .weights, the manifest's rules) of a bag over BAG_TERMS and 5 genres, random numbers
    stored as bag.stored stores them (idf to 5 decimals, float32 scale and bias), read with max_chars."""
    rng, genres = np.random.default_rng(seed), len(BAG_GENRES)
    spec = {
        "genres": BAG_GENRES,
        "terms": BAG_TERMS,
        "idf": [round(float(x), 5) for x in rng.uniform(1, 6, len(BAG_TERMS))],
        "stop_words": BAG_STOP,
        "scale": [float(np.float32(x)) for x in rng.uniform(1e-3, 5e-2, genres)],
        "bias": [float(np.float32(x)) for x in rng.normal(-2, 1, genres)],
    }
    weights = rng.integers(-127, 128, (len(BAG_TERMS), genres)).astype(np.int8).tobytes()
    return spec, weights, {"windows": {**RULES["windows"], "max_chars": max_chars}, "bag": bag.RULE}


BAGS = {"max_chars": small_bag(RULES["windows"]["max_chars"]), "5 characters": small_bag(5)}

BAG_WORDS = [
    *SENTENCES,
    "Unicode letters: naïve Café Straße ǅemal ﬁne Ωmega 他走了 日本語の映画",
    "Digits: Agent 007, ٣٤٥ and ۱۲ and ½ and Ⅻ and x² and 3rd",
    "Combining marks: E\u0301lodie arrive\u0301 n\u0303o, Devanagari हिन्दी फ़िल्म",
    "Underscores: __init__ snake_case _ a_b __ _x",
    "Apostrophes: Don't stop, the spider's web, O’Brien, rock 'n' roll",
    "Stop words: The man and the woman of the house; to be, it is",
    "Hyphens: Spider-Man vs. well-known x-ray — e-mail 2-for-1",
    "Uppercase: İSTANBUL İi KELVIN \u212a ẞ ΟΔΟΣ ΟΔΟΣ. ΟΔΟΣ'Α ΣΑΣ Σ ΣΣ ΟΔΟΣ's",
    "The detective finds a clue. The detective finds the clue! Detective: finds, clue.",
    "constructor __proto__ hasOwnProperty toString",
    # longer than max_chars: astral characters before the cut (a cut by UTF-16 units would end elsewhere) and
    # the last word cut in two; then an emoji as the last character read
    "🎬🎬 abcdefgh " * 2000,
    "a" * (RULES["windows"]["max_chars"] - 1) + "🎬bc de",
]
# read to 5 characters: the emoji before the cut and at it, and a sigma final only once cut
BAG_WORDS_5 = ["ab🎬cd ef", "abcd🎬 ef", "ΟΔΟΣΑ", "ab cd ef"]
BAG_TEXTS = [
    "",
    "Nothing of the vocabulary in this one at all? None.",
    "Mr. Smith goes to Washington. He goes to Washington again, and again goes.",
    "The detective finds a clue. The detective finds the clue! Detective: finds, clue. " * 3,
    "Spider-Man, spider man, SPIDER MAN: the Café of İstanbul, ΟΔΟΣ ٣٤٥ 007 __init__ constructor __proto__",
    "🎬🎬 abcdefgh " * 2000,
]
BAG_BLEND = [
    (f"p {p}, z {z}, a {a}", [[p, p, p], [z, -z, 0.0], a, bag.RULE["clip"]])
    for p in (0.0, 1.0, 0.5, 1e-7, float(np.float32(0.3)))
    for z in (0.0, 2.5, 50.0, 1000.0)
    for a in (0.0, 0.3, 1.0)
]
BAG_CASES = (
    [(f"words: {t[:60]!r}", "max_chars", "words", [t]) for t in BAG_WORDS]
    + [(f"words, 5 characters: {t!r}", "5 characters", "words", [t]) for t in BAG_WORDS_5]
    + [(f"{fn}: {t[:60]!r}", "max_chars", fn, [t]) for fn in ("features", "logits") for t in BAG_TEXTS]
    + [(f"blend: {name}", None, "blend", args) for name, args in BAG_BLEND]
)

BAG_NODE = """
import { Bag, blend } from %s;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const { bags, cases } = JSON.parse(input);
const made = Object.fromEntries(Object.entries(bags).map(([name, [spec, weights, rulebook]]) => [name, new Bag(spec, Uint8Array.from(weights), rulebook)]));
const out = cases.map(([bag, fn, args]) => {
  try {
    const value = bag === null ? blend(...args) : made[bag][fn](...args);
    if (fn === "features") return { value: [value.indices, value.values] };
    return { value: ArrayBuffer.isView(value) ? Array.from(value) : value }; // a typed array as a list
  } catch (e) { return { error: String(e) }; }
});
process.stdout.write(JSON.stringify(out));
"""


def run_bag_js(cases: list[list]) -> list[dict]:
    """bag.js on [bag name (BAGS) or None (blend), function, args] cases."""
    src = BAG_NODE % json.dumps((ROOT / "assets/js/bag.js").as_uri())
    bags = {name: [spec, list(weights), rulebook] for name, (spec, weights, rulebook) in BAGS.items()}
    payload = json.dumps({"bags": bags, "cases": cases}, ensure_ascii=True)
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", src], input=payload, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def bag_javascript():
    got = run_bag_js([[bag, fn, args] for _, bag, fn, args in BAG_CASES])
    return dict(zip((name for name, _, _, _ in BAG_CASES), got))


@pytest.mark.parametrize("name,bag_name,fn,args", BAG_CASES, ids=[name for name, _, _, _ in BAG_CASES])
def test_javascript_bag_equals_python_bag(bag_javascript, name, bag_name, fn, args):
    got = bag_javascript[name]
    assert "error" not in got, got["error"]
    if fn == "blend":
        with np.errstate(over="ignore"):  # z of 1000: exp overflows to inf, the probability to 0, on both sides
            expected = np.asarray(bag.blend(np.array(args[0], np.float32), np.array(args[1]), *args[2:]), np.float32)
        # float32 on both sides from the same float64 steps; log and exp may differ by an ulp between libms,
        # which float32 rounding almost always hides: at most one float32 step apart
        assert np.all(np.abs(np.float32(got["value"]) - expected) <= np.spacing(expected)), (got, expected)
        return
    spec, weights, rulebook = BAGS[bag_name]
    model = bag.Bag(spec, weights, rulebook["windows"]["max_chars"], rulebook["bag"])
    if fn == "words":
        assert got["value"] == model.words(*args)
    elif fn == "features":
        idx, v = model.features(*args)
        assert got["value"][0] == idx.tolist()
        # numpy's dot sums the squares for the norm in its own order: an ulp or so of a unit vector's values
        assert np.allclose(got["value"][1], v, rtol=1e-12, atol=0)
    else:  # logits: the same products, summed in another order (numpy's matrix product)
        assert np.allclose(got["value"], model.logits(args)[0], rtol=1e-12, atol=1e-12)


def test_the_bag_cases_reach_their_edges():
    """The words cases cut texts at max_chars (one of them inside a word, after astral characters), drop stop
    words and make pairs; the features cases hold counts over 1 and a text of no vocabulary term."""
    spec, weights, rulebook = BAGS["max_chars"]
    model = bag.Bag(spec, weights, rulebook["windows"]["max_chars"])
    cut = model.words("🎬🎬 abcdefgh " * 2000)
    assert cut[len(cut) // 2] == "abcde" and "abcde" in model.index  # the last token read, cut in two
    tokens = ["stop", "words", "man", "woman"]  # "the", "and" dropped; then the pairs of what is left
    assert model.words("Stop words: The man and the woman") == tokens + ["stop words", "words man", "man woman"]
    counts = [model.features(t)[0].size for t in BAG_TEXTS]
    assert counts[0] == counts[1] == 0 and min(counts[2:]) > 0
    spider = dict(zip(*model.features(BAG_TEXTS[4])))
    assert len(set(spider.values())) > 1  # counts of 1 and more: tf = 1 + ln(count) differs


BAD_BAGS = {  # name -> (change to small_bag's spec, change to its weights' byte count, the manifest's labels)
    "more genres than labels": (lambda spec: spec, 0, BAG_GENRES[:4]),
    "fewer genres than labels": (lambda spec: spec, 0, [*BAG_GENRES, "Western"]),
    "other genres, as many": (lambda spec: spec, 0, [*BAG_GENRES[:4], "Western"]),
    "the genres in another order": (lambda spec: spec, 0, BAG_GENRES[::-1]),
    "a byte short": (lambda spec: spec, -1, BAG_GENRES),
    "a genre's bias missing, labels not checked": (lambda spec: {**spec, "bias": spec["bias"][:-1]}, 0, None),
    "a genre's scale too many": (lambda spec: {**spec, "scale": [*spec["scale"], 0.1]}, 0, BAG_GENRES),
    "a term's idf missing": (lambda spec: {**spec, "idf": spec["idf"][:-1]}, 0, BAG_GENRES),
    "no genres (a bag from before they were named)": (
        lambda spec: {k: v for k, v in spec.items() if k != "genres"},
        0,
        BAG_GENRES,
    ),
    "genres as one string": (lambda spec: {**spec, "genres": "Action"}, 0, None),
    "a genre that is not a name": (lambda spec: {**spec, "genres": [*BAG_GENRES[:4], 5]}, 0, None),
    "other labels and a scale too many: the labels first": (
        lambda spec: {**spec, "scale": [*spec["scale"], 0.1]},
        0,
        BAG_GENRES[:4],
    ),
}


@pytest.mark.parametrize("name", BAD_BAGS)
def test_both_bags_refuse_files_that_do_not_fit_the_manifest_alike(name):
    """A bag whose genres are not the manifest's labels (in order), whose per-genre or per-term numbers are not
    one per genre or term, or whose weights are not terms x genres bytes, is refused by bag.py and bag.js with
    the same message (no probability is blended from the wrong genres)."""
    change, short, labels = BAD_BAGS[name]
    spec, weights, rulebook = BAGS["max_chars"]
    spec, weights = change(spec), weights[: len(weights) + short]
    with pytest.raises(ValueError) as python:
        bag.Bag(spec, weights, 100, bag.RULE, labels)
    src = (
        f"import {{ Bag }} from {json.dumps((ROOT / 'assets/js/bag.js').as_uri())};\n"
        f"try {{ new Bag({json.dumps(spec)}, new Uint8Array({len(weights)}), {json.dumps(rulebook)}, {json.dumps(labels)}); }}\n"
        "catch (e) { process.stdout.write(e.message); process.exit(0); }\nprocess.exit(3);"
    )
    proc = subprocess.run(["node", "--input-type=module", "-e", src], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # 3: the JS bag accepted it
    assert proc.stdout == str(python.value)


def test_both_bags_accept_the_manifests_labels():
    """The refusals above are of the faults alone: the same bag with its own genres as the labels is read."""
    spec, weights, rulebook = BAGS["max_chars"]
    assert bag.Bag(spec, weights, 100, bag.RULE, list(BAG_GENRES)).genres == BAG_GENRES
    src = (
        f"import {{ Bag }} from {json.dumps((ROOT / 'assets/js/bag.js').as_uri())};\n"
        f"new Bag({json.dumps(spec)}, new Uint8Array({len(weights)}), {json.dumps(rulebook)}, {json.dumps(BAG_GENRES)});"
    )
    proc = subprocess.run(["node", "--input-type=module", "-e", src], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_both_bags_check_the_ngrams_first():
    """A rule of other ngrams is refused before anything else, by both, with the same message (here the genres
    are wrong as well)."""
    spec, weights, rulebook = BAGS["max_chars"]
    rule = {**bag.RULE, "ngrams": 3}
    with pytest.raises(ValueError) as python:
        bag.Bag(spec, weights, 100, rule, BAG_GENRES[:2])
    src = (
        f"import {{ Bag }} from {json.dumps((ROOT / 'assets/js/bag.js').as_uri())};\n"
        f"try {{ new Bag({json.dumps(spec)}, new Uint8Array({len(weights)}), {json.dumps({**rulebook, 'bag': rule})}, "
        f"{json.dumps(BAG_GENRES[:2])}); }}\n"
        "catch (e) { process.stdout.write(e.message); process.exit(0); }\nprocess.exit(3);"
    )
    proc = subprocess.run(["node", "--input-type=module", "-e", src], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == str(python.value) and "ngrams 3" in proc.stdout


UNICODE_NODE = """
// every code point whose pair the JS token pattern matches whole (a token of two), as [first, last] runs; and
// each code point whose toLowerCase is not itself, with what it becomes
const token = new RegExp("^(?:" + %s + ")$", "u"), runs = [], lowered = {};
for (let c = 0; c <= 0x10ffff; c++) {
  if (c >= 0xd800 && c < 0xe000) continue; // surrogates: no character of their own
  const s = String.fromCodePoint(c);
  if (token.test(s.repeat(2))) {
    if (runs.length && runs[runs.length - 1][1] === c - 1) runs[runs.length - 1][1] = c;
    else runs.push([c, c]);
  }
  if (s.toLowerCase() !== s) lowered[c] = s.toLowerCase();
}
process.stdout.write(JSON.stringify({ runs, lowered }));
"""


def test_the_token_pattern_means_the_same_in_both_engines():
    """Python's \\w is exactly [\\p{L}\\p{N}_] (its categories L and N, and "_") over every code point, so
    rules.bag's two token patterns read the same tokens; node's own regular expression and lower-casing give
    the same on every code point Python's Unicode database assigns. (Code points assigned only in a newer
    Unicode, which node's ICU may know, can differ: a browser's Unicode is its own, nothing here bounds it.)"""
    import re
    import unicodedata

    word = re.compile(r"\w")
    points = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    python_word = {c for c in points if word.fullmatch(chr(c))}
    categories = {c for c in points if unicodedata.category(chr(c))[0] in "LN" or c == ord("_")}
    assert python_word == categories
    # and the whole Python pattern: maximal runs of two or more word characters
    assert re.findall(bag.RULE["token_pattern"]["python"], "a bc_d é1 x-yz __ ½Ⅻ") == ["bc_d", "é1", "yz", "__", "½Ⅻ"]

    src = UNICODE_NODE % json.dumps(bag.RULE["token_pattern"]["javascript"])
    proc = subprocess.run(["node", "-e", src], capture_output=True, text=True, check=True)
    got = json.loads(proc.stdout)
    js_word = {c for a, b in got["runs"] for c in range(a, b + 1)}
    assigned = {c for c in points if unicodedata.category(chr(c)) != "Cn"}
    assert js_word & assigned == python_word
    js_lower = {int(c): s for c, s in got["lowered"].items()}
    python_lower = {c: chr(c).lower() for c in assigned if chr(c).lower() != chr(c)}
    assert {c: s for c, s in js_lower.items() if c in assigned} == python_lower
