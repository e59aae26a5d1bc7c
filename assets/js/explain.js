// Why these genres: leave-one-sentence-out, as pipeline/predict.py `sentence_importance`. The plot is
// split by the manifest's sentence rule; each sentence's drop is the probability lost without it.
// A sentence that starts past the window (the manifest's truncation rule) cannot change
// what the encoder sees, so its drop is exactly 0 without a run. The rest run one at a time with a
// yield in between, at most MAX_RUNS, and each result is sent as it comes.
import { embed } from "./text.js";
import * as rules from "./rules.js";

const MAX_RUNS = 48; // sentence re-scorings per explanation, at most
const pause = () => new Promise((r) => setTimeout(r, 0));

// text: {session, tokenizer}; enc: the encoder's manifest entry; score(embedding) → probabilities;
// send(message); current() false once a newer prediction started.
export async function explain({ id, plot, text, enc, rulebook, probs, score, send, current }) {
  const parts = rules.sentences(plot, rulebook.sentence_pattern);
  const t0 = performance.now();
  if (parts.length < 2) { send({ type: "why-done", id, parts, runs: 0, ms: 0 }); return; }
  const window = rulebook.truncation;
  // the text's tokens the window keeps from the start: head_tokens less the special tokens before the
  // text (an empty text's ids are all special; the last tail_tokens of them come after it)
  const headText = window.head_tokens - (text.tokenizer.encode("").ids.length - window.tail_tokens);
  const prefixTokens = (i) => text.tokenizer.encode(parts.slice(0, i).join(""), { add_special_tokens: false }).ids.length;
  let lo = 1, hi = parts.length; // the first i whose prefix already fills the window
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const prefix = parts.slice(0, mid).join("");
    if (prefix.length >= window.max_chars || prefixTokens(mid) >= headText) hi = mid; else lo = mid + 1;
  }
  const inWindow = Math.min(lo, MAX_RUNS);
  send({ type: "why-start", id, parts, toRun: inWindow, window: lo }); // from `lo` on: exact zeros
  const batch = enc.batchable ? 8 : 1;
  for (let i = 0; i < lo; i += batch) {
    await pause();
    if (!current()) return;
    const group = Array.from({ length: Math.min(batch, lo - i) }, (_, j) => i + j);
    const rests = group.map((s) => [...parts.slice(0, s), ...parts.slice(s + 1)].join("").trim());
    const todo = group.filter((s, j) => s < inWindow && rests[j]);
    const embs = todo.length ? await embed(todo.map((s) => rests[group.indexOf(s)]), text, enc, rulebook) : [];
    if (!current()) return;
    for (const s of group) {
      let drops = s >= inWindow ? null : new Array(probs.length).fill(0); // null: over the cap, not computed
      const at = todo.indexOf(s);
      if (at >= 0) {
        const without = await score(embs[at]);
        drops = Array.from(probs, (p, g) => p - without[g]);
      }
      send({ type: "why", id, i: s, drops });
    }
  }
  send({ type: "why-done", id, parts, runs: inWindow, ms: performance.now() - t0 });
}
