// The bag of words, as pipeline/runtime/bag.py reads it: TF-IDF + logistic regression over a text's first
// max_chars characters, its genre logits z blended into the fusion head's probabilities (the manifest's
// rules.bag says how, bag_of_words.json and .weights hold the vocabulary and weights).
// tests/test_rules.py runs this file and bag.py on the same cases and compares them.
import * as rules from "./rules.js";

export class Bag {
  // spec: bag_of_words.json; weights: the bytes of bag_of_words.weights (int8 [terms, genres], row-major);
  // rulebook: the manifest's rules (windows.max_chars, bag); labels: the manifest's labels, which the bag's
  // genres must be, in order (null: not checked). Every check and its message is bag.py's, in the same order.
  constructor(spec, weights, rulebook, labels = null) {
    const rule = rulebook.bag;
    if (rule.ngrams !== 2) throw new Error(`bag ngrams ${JSON.stringify(rule.ngrams)}: this code reads words and pairs of words (2)`);
    const genres = spec.genres;
    if (!Array.isArray(genres) || !genres.every((g) => typeof g === "string")) {
      throw new Error("bag_of_words.json: no list of genre names (a bag written before its genres were named)");
    }
    if (labels !== null && (genres.length !== labels.length || genres.some((g, i) => g !== labels[i]))) {
      throw new Error(`bag_of_words.json: its genres (${genres.join(", ")}) are not the manifest's labels (${labels.join(", ")})`);
    }
    for (const key of ["scale", "bias"]) {
      if (spec[key].length !== genres.length) throw new Error(`bag_of_words.json: ${spec[key].length} ${key} values for ${genres.length} genres`);
    }
    if (spec.idf.length !== spec.terms.length) throw new Error(`bag_of_words.json: ${spec.idf.length} idf values for ${spec.terms.length} terms`);
    if (weights.length !== spec.terms.length * genres.length) {
      throw new Error(`bag_of_words.weights: ${weights.length} bytes for ${spec.terms.length} terms x ${genres.length} genres`);
    }
    this.genres = genres.length;
    this.index = new Map(spec.terms.map((t, i) => [t, i])); // a Map: a term may be "constructor" or "__proto__"
    this.idf = spec.idf;
    this.stop = new Set(spec.stop_words);
    this.scale = spec.scale;
    this.bias = spec.bias;
    this.w = new Int8Array(weights.buffer, weights.byteOffset, weights.length);
    this.windows = rulebook.windows;
    // Python's (?u)\b\w\w+\b: \w is [\p{L}\p{N}_] (tests/test_rules.py checks every code point)
    this.token = new RegExp(rule.token_pattern.javascript, "gu");
  }

  // The text's terms, in order: its tokens without stop words, then each pair of consecutive ones.
  words(text) {
    const tokens = (rules.clip(text, this.windows).toLowerCase().match(this.token) ?? []).filter((t) => !this.stop.has(t));
    return [...tokens, ...tokens.slice(1).map((t, k) => `${tokens[k]} ${t}`)];
  }

  // {indices, values}: the text's unit-length TF-IDF vector over the vocabulary, indices ascending.
  features(text) {
    const counts = new Map();
    for (const t of this.words(text)) {
      const i = this.index.get(t);
      if (i !== undefined) counts.set(i, (counts.get(i) ?? 0) + 1);
    }
    const indices = [...counts.keys()].sort((a, b) => a - b);
    const values = indices.map((i) => (1 + Math.log(counts.get(i))) * this.idf[i]);
    const norm = Math.sqrt(values.reduce((sum, v) => sum + v * v, 0));
    return { indices, values: norm > 0 ? values.map((v) => v / norm) : values };
  }

  // Float64Array [genres]: z = x . W + b, W = int8 * scale per genre (the product is exact in float64, as
  // Python's W; the sum is added to the bias last, as Python adds it)
  logits(text) {
    const { indices, values } = this.features(text), G = this.genres;
    const sum = new Float64Array(G);
    indices.forEach((i, k) => {
      for (let g = 0; g < G; g++) sum[g] += values[k] * (this.w[i * G + g] * this.scale[g]);
    });
    return sum.map((s, g) => this.bias[g] + s);
  }
}

// The head's probabilities [G] mixed with the bag's logits z [G] at weight a (rules.bag.blend; 0: probs as
// given), p clipped to [clip, 1 - clip]: float32, as Python returns them.
export function blend(probs, z, a, clip) {
  if (a === 0) return probs;
  return Float32Array.from(probs, (p, g) => {
    const c = Math.min(Math.max(p, clip), 1 - clip);
    return 1 / (1 + Math.exp(-((1 - a) * Math.log(c / (1 - c)) + a * z[g])));
  });
}
