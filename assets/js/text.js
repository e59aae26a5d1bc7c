// Plot text → token ids → windows → embeddings, as pipeline/runtime/predictor.py does: the same
// tokenizer.json (the `tokenizers` library in JS), the text clipped and read in windows by the
// manifest's rules (rules.windows).
import { Tokenizer } from "../vendor/tokenizers.min.mjs";
import { now, ort, phases, run } from "./runtime.js";
import * as rules from "./rules.js";

export function tokenizer(bytes) {
  const at = now();
  const tok = new Tokenizer(JSON.parse(new TextDecoder().decode(bytes)), {});
  phases.tokenizer ??= { at, ms: now() - at };
  return tok;
}

// Ids with special tokens, no padding, of the first max_chars characters (rules.windows): the whole text
// the windows are cut from (rules.windows_without cuts a sentence out of them).
export function encode(text, tok, rulebook) {
  return tok.encode(rules.clip(text, rulebook.windows)).ids;
}

// The text tokens (no special tokens) of the first max_chars characters of `text`: where a sentence's
// tokens start among the plot's, for the explanation.
export function countTokens(text, tok, rulebook) {
  return tok.encode(rules.clip(text, rulebook.windows), { add_special_tokens: false }).ids.length;
}

// Embeddings of windows (lists of ids) with the encoder `enc` (a manifest entry), `perRun` windows per
// run at most (the demo runs one at a time: its status line counts them, and a newer prediction waits
// behind one run only); before(done, total) is awaited ahead of each run. An encoder that is not batchable
// (dynamic int8 quantization computes one activation scale over the whole input, so padding or batching
// would change the outputs) takes one window per run.
export async function embed(windows, { session }, enc, { perRun = 1, before = () => {} } = {}) {
  const batch = enc.batchable ? perRun : 1;
  const out = [];
  for (let at = 0; at < windows.length; at += batch) {
    await before(at, windows.length);
    const group = windows.slice(at, at + batch);
    const len = Math.max(...group.map((g) => g.length));
    const flat = new BigInt64Array(group.length * len), mask = new BigInt64Array(group.length * len);
    group.forEach((g, r) => g.forEach((id, c) => { flat[r * len + c] = BigInt(id); mask[r * len + c] = 1n; }));
    const shape = [group.length, len];
    const res = await run(session, { input_ids: new ort.Tensor("int64", flat, shape), attention_mask: new ort.Tensor("int64", mask, shape) });
    const e = res[enc.output].data;
    for (let r = 0; r < group.length; r++) out.push(e.slice(r * enc.dim, (r + 1) * enc.dim));
  }
  return out;
}

// Not a plot? Fewer words than curation kept, or mostly words the vocabulary does not hold whole.
export function caution(plot, tok, minWords) {
  const words = plot.split(rules.pattern("\\s+")).filter(Boolean); // as Python's str.split() counts them in curation
  if (words.length < minWords) return { kind: "short", words: words.length, min: minWords };
  const sample = words.slice(0, 400).map((w) => w.toLowerCase().replace(/^[^\p{L}\p{N}]+|[^\p{L}\p{N}]+$/gu, "")).filter(Boolean);
  if (!sample.length) return { kind: "oov", share: 1 };
  const unknown = sample.filter((w) => {
    const pieces = tok.tokenize(w, { add_special_tokens: false });
    return pieces.length !== 1 || pieces[0] === "[UNK]";
  }).length;
  const share = unknown / sample.length;
  return share > 0.5 ? { kind: "oov", share } : null;
}
