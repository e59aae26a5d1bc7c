// The rules the browser shares with Python, read from the manifest's "rules" block, which export.py
// writes from pipeline/runtime/rules.py (RULES): the decision rule, the sentence split and the text windows.
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
