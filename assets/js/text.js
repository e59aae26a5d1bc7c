// Plot text → token ids → embeddings, as pipeline/text.py does: the same tokenizer.json (the
// `tokenizers` library in JS), the text clipped and the ids cut to the window by the manifest's rules.
import { Tokenizer } from "../vendor/tokenizers.min.mjs";
import { now, ort, phases, run } from "./runtime.js";
import * as rules from "./rules.js";

export function tokenizer(bytes) {
  const at = now();
  const tok = new Tokenizer(JSON.parse(new TextDecoder().decode(bytes)), {});
  phases.tokenizer ??= { at, ms: now() - at };
  return tok;
}

// Ids with special tokens, no padding: the first max_chars characters, then the window, both as the
// manifest's truncation rule states them (as pipeline/predictor.py reads them).
export function encode(text, tok, rulebook) {
  const window = rulebook.truncation;
  return rules.truncate(tok.encode(rules.clip(text, window)).ids, window);
}

// Embeddings of several texts with the encoder `enc` (a manifest entry). Dynamic int8 quantization
// computes one activation scale over the whole input, so padding or batching would change the outputs:
// one unpadded text per run unless the manifest says the encoder is batchable (fixed activation scales).
export async function embed(texts, { session, tokenizer: tok }, enc, rulebook) {
  const ids = texts.map((t) => encode(t, tok, rulebook));
  const batch = enc.batchable ? 8 : 1;
  const out = [];
  for (let at = 0; at < ids.length; at += batch) {
    const group = ids.slice(at, at + batch);
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
