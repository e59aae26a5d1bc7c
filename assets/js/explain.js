// Why these genres: leave sentences out, as pipeline/runtime/occlusion.py `sentence_importance`. The plot
// is split by the manifest's sentence rule; sentence i holds the plot's text tokens n(i)..n(i+1)-1, n(i) the
// tokens of the sentences before it (joined, clipped to max_chars). The sentences read (those starting
// before max_chars) are grouped into passages of consecutive sentences by rules.passages: each sentence
// alone when leaving each out re-runs at most rules.explanation.max_tokens token ids, else a few passages
// balanced in tokens. The plot without a passage is the prediction's windows with its tokens left out
// (rules.windows_without): only the windows that hold them run again, the others keep the embeddings the
// prediction computed, and the windows are pooled as for the prediction, then blended with the bag of words'
// reading of the other sentences joined; the passage's drop, which each of its sentences gets, is the
// probability lost. A passage with no tokens cannot change what the encoder sees: its drop is exactly 0,
// without a run; so is every sentence past max_chars (in no passage).
// The window runs go one at a time, in plot order, with a yield before each (a newer prediction stops
// the explanation there, so its own runs wait behind one window run at most), within BUDGET_MS; each
// passage's drops are sent as they come.
import { countTokens, embed } from "./text.js";
import * as rules from "./rules.js";

// The explanation's time, at most (the bound for a 700-word plot, warm). max_tokens is what makes a
// plot fit it: 2,048 ids, 8 windows of 256 at 356 ms (bench.browser, 2026-12-06, idle), ~2.9 s; the 700-word
// plot of tests/test_browser.py (34 sentences, 886 ids, 4 windows at stride 254) would re-run 42 windows with
// each sentence alone (53 at stride 190), ~15 s; in 7 passages it re-runs 11 windows, 1,800 ids (6 passages,
// 12 windows, 1,802 ids at stride 190). This guard stops what the plan cannot bound: a slower machine (a
// window at 430 ms under load, a phone 4x slower), or max_chars' worth of text where 2 passages already
// re-run more than max_tokens. A passage's runs start only when they should end within it, each id expected
// to take as long to run as the ids run before it (at first, the prediction's own windows).
export const BUDGET_MS = 3000;

// Code points, as Python counts a string's length (max_chars counts them).
const codePoints = (s) => { let n = 0; for (const _ of s) n++; return n; };

// n(0..past): the text tokens of the first i sentences joined, clipped to max_chars (occlusion.py
// token_spans), for i up to past, the sentences read. Tokenizing each prefix took 0.6-0.9 s on
// bench.browser's 200,000-character paste (322 sentences read; Chromium, 2026-12-06, load 5 on 2 cores).
// The tokenizer splits words at whitespace and punctuation, where every sentence but the last ends, so n(i)
// is the sum of the sentences' own counts (15-18 ms there), and n(past), where the clip may cut a word, is
// counted whole; tests/test_browser.py checks both against Python's. A tokenizer that joined tokens across a
// sentence end would make the sum differ from n(past - 1) counted whole: then every prefix is counted.
export function tokenEnds(parts, past, count) {
  const ends = [0];
  for (let i = 0; i < past - 1; i++) ends.push(ends[i] + count(parts[i]));
  if (past > 1 && count(parts.slice(0, past - 1).join("")) !== ends[past - 1]) {
    for (let i = 1; i < past; i++) ends[i] = count(parts.slice(0, i).join(""));
  }
  ends.push(count(parts.slice(0, past).join("")));
  return ends;
}

// id; plot; ids: the plot's token ids (special tokens included) its windows were cut from; windowMs: the
// time a window took in the prediction; text: {session, tokenizer}; enc: the encoder's manifest entry;
// probs: the prediction's; score(replaced {window: embedding}, words) → the probabilities with those windows
// replaced, blended with the bag of words' reading of the text `words`; send(message); current() false once
// a newer prediction started; pause() resolves after the messages already queued for this thread.
// Messages: why-start {parts, past, passages: [[i, j], ...], ends}; why {passage, i, j, drops} for each
// passage scored, in order; why-done {runs, scored: passages scored, sentences: sentences they hold}.
export async function explain({ id, plot, ids, windowMs, text, enc, rulebook, probs, score, send, current, pause }) {
  const parts = rules.sentences(plot, rulebook.sentence_pattern);
  const t0 = performance.now();
  const done = (runs, scored, sentences) => send({ type: "why-done", id, parts, runs, scored, sentences, budgetMs: BUDGET_MS, ms: performance.now() - t0 });
  if (parts.length < 2) { done(0, 0, 0); return; }
  const rule = rulebook.windows;
  // the first sentence that starts past max_chars: it and those after it have no tokens
  let past = parts.length;
  for (let i = 0, chars = 0; i < parts.length; chars += codePoints(parts[i++])) {
    if (chars >= rule.max_chars) { past = i; break; }
  }
  const ends = tokenEnds(parts, past, (s) => countTokens(s, text.tokenizer, rulebook));
  const plan = rules.passages(ends, ids.length, rule, rulebook.explanation.max_tokens);
  send({ type: "why-start", id, parts, past, passages: plan, ends });
  const zeros = new Array(probs.length).fill(0);
  // ms per id run: the prediction's windows (max_len ids each, or the whole text) count as one run
  let runs = 0, ranIds = Math.min(ids.length, rule.max_len), ranMs = windowMs, g = 0;
  for (; g < plan.length; g++) {
    const [i, j] = plan[g];
    const touched = rules.windows_without(ids, rule, ends[i], ends[j]);
    const windows = Object.keys(touched).map(Number);
    const expected = (windows.reduce((n, k) => n + touched[k].length, 0) * ranMs) / ranIds;
    if (g > 0 && performance.now() - t0 + expected > BUDGET_MS) break; // the first always runs
    let drops = zeros; // no tokens: exactly no effect
    if (windows.length) {
      const replaced = {};
      for (const k of windows) {
        await pause();
        if (!current()) return;
        const at = performance.now();
        [replaced[k]] = await embed([touched[k]], text, enc);
        if (!current()) return;
        ranMs += performance.now() - at;
        ranIds += touched[k].length;
        runs++;
      }
      const without = await score(replaced, [...parts.slice(0, i), ...parts.slice(j)].join(""));
      if (!current()) return;
      drops = Array.from(probs, (p, c) => p - without[c]);
    }
    send({ type: "why", id, passage: g, i, j, drops });
  }
  done(runs, g, g ? plan[g - 1][1] : 0);
}
