// The rules the browser shares with Python, read from the manifest's "rules" block, which export.py
// writes from pipeline/runtime/rules.py (RULES): the decision rule, the sentence split, the text windows and
// the explanation's passages.
// Nothing here restates a rule: every constant comes from the block. tests/test_rules.py runs these
// functions and pipeline/runtime/rules.py on the same cases and compares them.

// Python's \s (str.isspace) in a JavaScript class: JS's \s lacks \x1c-\x1f and \x85 and adds \ufeff.
const PY_SPACE = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

// A Python `re` pattern as a JavaScript RegExp with the same meaning: matched by code point (flag u),
// \s as Python defines it. Patterns use the syntax both languages share.
export function pattern(source) {
  let out = "", inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "\\") {
      const next = source[++i];
      out += next === "s" ? (inClass ? PY_SPACE : `[${PY_SPACE}]`) : c + next;
    } else {
      if (c === "[" && !inClass) inClass = true;
      else if (c === "]" && inClass && !out.endsWith("[") && !out.endsWith("[^")) inClass = false;
      out += c;
    }
  }
  return new RegExp(out, "gu");
}

// rules.decision: true for each genre predicted. A genre is predicted when its probability is at or over
// its threshold; with none, the most likely one (the first of equal maxima, as numpy's argmax).
export function decide(probs, thresholds, rule) {
  if (rule?.predict_when !== "probability >= threshold" || rule?.if_none !== "most_likely") {
    throw new Error(`unknown decision rule ${JSON.stringify(rule)}`);
  }
  const pred = probs.map((p, i) => p >= thresholds[i]);
  if (!pred.includes(true)) {
    let best = 0;
    for (let i = 1; i < probs.length; i++) if (probs[i] > probs[best]) best = i;
    pred[best] = true;
  }
  return pred;
}

// rules.sentence_pattern: the sentences of a text, in order (joined they give back the text's matched parts).
export function sentences(text, sentencePattern) {
  return text.match(pattern(sentencePattern)) ?? [];
}

// The first max_chars characters (code points, as Python slices), what the tokenizer is given; `rule` is
// rules.windows (its max_chars).
export function clip(text, rule) {
  const n = rule.max_chars;
  if (text.length <= n) return text;
  let at = 0;
  for (let count = 0; count < n && at < text.length; count++) {
    const c = text.charCodeAt(at);
    const pair = c >= 0xd800 && c < 0xdc00 && (text.charCodeAt(at + 1) & 0xfc00) === 0xdc00;
    at += pair ? 2 : 1;
  }
  return text.slice(0, at);
}

// rules.windows: a text of more than max_len ids (special tokens included) is read in windows of max_len,
// each holding the text's first and last ids ([CLS], [SEP]) around a run of its text tokens; the runs start
// every `stride` text tokens and the last one ends with the text, so every token is read.

// Where each window starts among a text's `tokens` text tokens (special tokens not counted).
export function window_starts(tokens, rule) {
  const width = rule.max_len - 2;
  if (tokens <= width) return [0];
  const starts = [];
  for (let s = 0; s < tokens - width; s += rule.stride) starts.push(s);
  starts.push(tokens - width);
  return starts;
}

// Token ids (special tokens included: the first and the last) → the windows the encoder reads.
export function windows(ids, rule) {
  if (ids.length <= rule.max_len) return [ids];
  const first = ids[0], body = ids.slice(1, -1), last = ids[ids.length - 1];
  const width = rule.max_len - 2;
  return window_starts(body.length, rule).map((s) => [first, ...body.slice(s, s + width), last]);
}

// For the sentence explanation: {window index: its ids with text tokens start..end-1 left out}, only for
// the windows those tokens are in; every other window stays as it was (its embedding is reused).
export function windows_without(ids, rule, start, end) {
  if (ids.length <= rule.max_len) return start < end ? { 0: [...ids.slice(0, 1 + start), ...ids.slice(1 + end)] } : {};
  const first = ids[0], body = ids.slice(1, -1), last = ids[ids.length - 1];
  const width = rule.max_len - 2;
  const out = {};
  window_starts(body.length, rule).forEach((s, k) => {
    const a = Math.max(start, s), b = Math.min(end, s + width);
    if (a < b) out[k] = [first, ...body.slice(s, a), ...body.slice(b, s + width), last];
  });
  return out;
}

// The token ids windows_without re-runs for a text of n_ids ids, counted without building them: every
// window holding a text token in start..end-1, each without those tokens.
export function rerun_tokens(n_ids, rule, start, end) {
  if (start >= end) return 0;
  if (n_ids <= rule.max_len) return n_ids - (end - start);
  const width = rule.max_len - 2;
  let total = 0;
  for (const s of window_starts(n_ids - 2, rule)) {
    const a = Math.max(start, s), b = Math.min(end, s + width);
    if (a < b) total += width + 2 - (b - a);
  }
  return total;
}

// rules.explanation: the explanation's parts, [i, j) for consecutive sentences left out together. `ends`:
// the sentences' text-token boundaries, n(0) = 0 <= n(1) <= ... <= n(m), sentence i holding n(i)..n(i+1)-1.
// Each sentence alone when leaving each out re-runs at most max_tokens ids (rerun_tokens); otherwise the
// sentences are cut into k runs balanced in tokens (sentence i in run floor(n(i) * k / n(m)); a run no
// sentence starts in is skipped), k the largest from m - 1 down to 2 that re-runs at most max_tokens (k = 2
// when none does). Fewer than 3 sentences: each alone. The same parts as Python's, computed faster (costTerms).
export function passages(ends, n_ids, rule, max_tokens) {
  const m = ends.length - 1;
  const alone = Array.from({ length: Math.max(0, m) }, (_, i) => [i, i + 1]);
  if (m < 3) return alone;
  const { pairs, unit, covered } = costTerms(ends, n_ids, rule);
  const over = (sum) => unit * sum - covered > max_tokens; // sum: the parts' pairs
  if (!over(alone.reduce((sum, [i, j]) => sum + pairs(i, j), 0))) return alone;
  // Python's n(i) * k // n(m): both non-negative integers, their product far under 2^53 (n(i) counts the
  // tokens of max_chars characters), so the division in doubles floors to the same integer
  const total = Math.max(ends[m], 1), run = (i, k) => Math.min(Math.floor((ends[i] * k) / total), k - 1);
  tries: for (let k = m - 1; k > 1; k--) {
    // the parts' pairs, added as each part closes: once over max_tokens, this k cannot fit (the sum only
    // grows), so the next k is tried at once (k = 2 is returned all the same)
    let sum = 0, first = 0, before = run(0, k);
    for (let i = 1; i < m; i++) {
      const now = run(i, k);
      if (now === before) continue;
      sum += pairs(first, i);
      if (k > 2 && over(sum)) continue tries;
      first = i;
      before = now;
    }
    sum += pairs(first, m);
    if (k === 2 || !over(sum)) {
      const starts = [0];
      for (let i = 1; i < m; i++) if (run(i, k) !== run(i - 1, k)) starts.push(i);
      return starts.map((i, n) => [i, starts[n + 1] ?? m]);
    }
  }
  throw new Error("unreachable: k = 2 returns");
}

// What Python's passages sums, rerun_tokens over the parts, as unit x (the parts' pairs) - covered, for parts
// that cover n(0)..n(m) once, in order: summed over them, the tokens left out of each window add up to its
// tokens in n(0)..n(m) (covered, the same for every k), and every (part, window) pair sharing a token re-runs
// the window, unit = max_len ids (one window, n_ids <= max_len: every non-empty part re-runs the text's n_ids
// ids, covered then n(m) - n(0)). pairs(i, j), the windows sentences i..j-1 share a token with, is O(1), so a
// k costs O(m) rather than O(m x windows): a paste of ~6,700 two-token sentences tries thousands of k (15 s
// in node summed window by window, 14 ms so). tests/test_rules.py compares the parts with Python's on random
// cases too.
function costTerms(ends, n_ids, rule) {
  const m = ends.length - 1;
  if (n_ids <= rule.max_len) return { pairs: (i, j) => (ends[i] < ends[j] ? 1 : 0), unit: n_ids, covered: ends[m] - ends[0] };
  const width = rule.max_len - 2, starts = window_starts(n_ids - 2, rule);
  const below = (x) => { // how many windows start before x (starts ascend)
    let lo = 0, hi = starts.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (starts[mid] < x) lo = mid + 1; else hi = mid; }
    return lo;
  };
  // a window starting at s shares a token with [a, b) when a < b and a - width < s < b
  const upTo = ends.map((n) => below(n)), from = ends.map((n) => below(n - width + 1));
  let covered = 0;
  for (const s of starts) covered += Math.max(0, Math.min(ends[m], s + width) - Math.max(ends[0], s));
  return { pairs: (i, j) => (ends[i] < ends[j] ? upTo[j] - from[i] : 0), unit: rule.max_len, covered };
}

// What pipeline/runtime/manifest.py check_windows refuses beyond the schema, in its words, or null: windows
// of another size than the encoder's (max_len) or a stride over a window's text tokens (the tokens between
// two windows never read). models.js refuses such a manifest, as Python's reader does; the rest of
// check_windows (whole numbers of at least 1, a known pooling) is the schema's, which both readers apply.
export function windows_problem(windows, maxLen) {
  if (windows.max_len !== maxLen) return `rules.windows.max_len ${windows.max_len} is not text_encoder.max_len ${maxLen}`;
  const width = maxLen - 2; // a window's text tokens: [CLS] and [SEP] take two of its ids
  if (windows.stride > width) {
    return `rules.windows.stride ${windows.stride} is over a window's ${width} text tokens (max_len - 2): the tokens between two windows would never be read`;
  }
  return null;
}

export const POOLS = ["mean_embedding", "mean_probability", "max_probability"];

// rules.windows.pool: what is pooled, its last word (the windows' embeddings, before the head; or their
// probabilities, the head run on each window), and how, its first (mean or max).
export function pooled(how) {
  if (!POOLS.includes(how)) throw new Error(`unknown pooling ${JSON.stringify(how)}`);
  return how.endsWith("embedding") ? "embedding" : "probability";
}

// [windows][values] → [values]: the mean or the maximum over the windows, in float32 (as numpy's float32
// mean: each window's values float32, the mean rounded to float32; the sum's order may differ by an ulp).
export function pool(perWindow, how) {
  pooled(how);
  const n = perWindow[0].length, out = new Float32Array(n);
  const max = how.startsWith("max");
  for (let j = 0; j < n; j++) {
    let acc = max ? -Infinity : 0;
    for (const row of perWindow) {
      const v = Math.fround(row[j]);
      acc = max ? Math.max(acc, v) : acc + v;
    }
    out[j] = max ? acc : acc / perWindow.length;
  }
  return out;
}
