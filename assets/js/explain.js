// Why these genres: leave-one-sentence-out, as pipeline/runtime/occlusion.py `sentence_importance`. The
// plot is split by the manifest's sentence rule; sentence i holds the plot's text tokens n(i)..n(i+1)-1,
// n(i) the tokens of the sentences before it (joined, clipped to max_chars). The plot without it is the
// prediction's windows with those tokens left out (rules.windows_without): only the windows that hold them
// run again, the others keep the embeddings the prediction computed, and the windows are pooled as for the
// prediction; its drop is the probability lost. A sentence with no tokens (one past max_chars) cannot
// change what the encoder sees: its drop is exactly 0, without a run.
// The window runs go one at a time, in plot order, with a yield before each (a newer prediction stops
// the explanation there, so its own runs wait behind one window run at most), within BUDGET_MS; each
// sentence's drops are sent as they come.
import { countTokens, embed } from "./text.js";
import * as rules from "./rules.js";

// The explanation's time, at most (the bound for a 700-word plot, warm). A sentence's window runs
// start only when they should end within it, each run expected to take as long as the runs before it (at
// first, a window of the prediction just made). A sentence touches one window, or two or three where they
// overlap: tests/test_browser.py's 700-word plot (34 sentences, 5 windows at stride 190) needs 53 runs (42
// with no overlap), 10-20 s at 200-430 ms a window (bench.browser, 2026-12-06, the machine idle to loaded),
// so its later sentences are not scored (the page says so); a plot of one window and a few sentences is
// scored whole.
export const BUDGET_MS = 3000;

// Code points, as Python counts a string's length (max_chars counts them).
const codePoints = (s) => { let n = 0; for (const _ of s) n++; return n; };

// id; plot; ids: the plot's token ids (special tokens included) its windows were cut from; windowMs: the
// time a window took in the prediction; text: {session, tokenizer}; enc: the encoder's manifest entry;
// probs: the prediction's; score(replaced {window: embedding}) → the probabilities with those windows
// replaced; send(message); current() false once a newer prediction started; pause() resolves after the
// messages already queued for this thread.
export async function explain({ id, plot, ids, windowMs, text, enc, rulebook, probs, score, send, current, pause }) {
  const parts = rules.sentences(plot, rulebook.sentence_pattern);
  const t0 = performance.now();
  const done = (runs, scored) => send({ type: "why-done", id, parts, runs, scored, budgetMs: BUDGET_MS, ms: performance.now() - t0 });
  if (parts.length < 2) { done(0, 0); return; }
  const rule = rulebook.windows;
  // the first sentence that starts past max_chars: it and those after it have no tokens
  let past = parts.length;
  for (let i = 0, chars = 0; i < parts.length; chars += codePoints(parts[i++])) {
    if (chars >= rule.max_chars) { past = i; break; }
  }
  send({ type: "why-start", id, parts, past });
  // n(i), tokenized only as far as the explanation gets (a 20,000-character paste is not tokenized a few
  // hundred times over)
  const before = [];
  const tokensBefore = (i) => (before[i] ??= countTokens(parts.slice(0, i).join(""), text.tokenizer, rulebook));
  const zeros = new Array(probs.length).fill(0);
  let runs = 0, runMs = windowMs, i = 0;
  for (; i < past; i++) {
    const touched = rules.windows_without(ids, rule, tokensBefore(i), tokensBefore(i + 1));
    const windows = Object.keys(touched).map(Number);
    if (i > 0 && performance.now() - t0 + windows.length * runMs > BUDGET_MS) break; // the first always runs
    let drops = zeros; // no tokens: exactly no effect
    if (windows.length) {
      const replaced = {};
      for (const k of windows) {
        await pause();
        if (!current()) return;
        const at = performance.now();
        [replaced[k]] = await embed([touched[k]], text, enc);
        if (!current()) return;
        runMs = (runMs * (runs + 1) + performance.now() - at) / (runs + 2); // the runs so far, the prediction's window as one
        runs++;
      }
      const without = await score(replaced);
      if (!current()) return;
      drops = Array.from(probs, (p, g) => p - without[g]);
    }
    send({ type: "why", id, i, drops });
  }
  done(runs, i);
}
