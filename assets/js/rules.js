// The rules the browser shares with Python, read from the manifest's "rules" block, which export.py
// writes from pipeline/rules.py (RULES): the decision rule, the sentence split and the text window.
// Nothing here restates a rule: every constant comes from the block. tests/test_rules.py runs these
// functions and pipeline/rules.py on the same cases and compares them.

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

// The first max_chars characters (code points, as Python slices), what the tokenizer is given.
export function clip(text, truncation) {
  const n = truncation.max_chars;
  if (text.length <= n) return text;
  let at = 0;
  for (let count = 0; count < n && at < text.length; count++) {
    const c = text.charCodeAt(at);
    const pair = c >= 0xd800 && c < 0xdc00 && (text.charCodeAt(at + 1) & 0xfc00) === 0xdc00;
    at += pair ? 2 : 1;
  }
  return text.slice(0, at);
}

// Token ids (special tokens included) cut to the window: the first head_tokens and the last tail_tokens.
export function truncate(ids, truncation) {
  if (ids.length <= truncation.max_len) return ids;
  return [...ids.slice(0, truncation.head_tokens), ...ids.slice(ids.length - truncation.tail_tokens)];
}
