// The demo's page side: it never runs a model. All model work (downloads, tokenizer, onnxruntime-web,
// poster decoding, Grad-CAM, explanation) happens in worker.js and the modules it imports; this file
// sends it messages and draws the answers, so the page stays responsive. Everything comes from this site.
const app = document.getElementById("demo-app");
const $ = (id) => document.getElementById(id);
const abs = (path) => new URL(path, location.href).href;
const mb = (n) => `${(n / 1048576).toFixed(1)} MB`;
const size = (n) => (n >= 104858 ? mb(n) : `${Math.max(1, Math.round(n / 1024))} KB`);

let worker = null;
let sent = []; // messages sent before the manifest was confirmed: sent again to a restarted worker
// A worker that started early from the runtime kept last visit asks for a restart when the fresh
// manifest names another runtime (models.js init): the new one reads the fresh copies only.
function startWorker(early) {
  worker = new Worker(abs(app.dataset.worker), { type: "module" });
  worker.onmessage = onMessage;
  worker.onerror = (e) => status(`The demo's worker failed: ${e.message}`, true);
  // window.__mmGenreOrt / __mmGenreEarly: session options and the early start, which bench/browser.py
  // compares (graphOptimizationLevel, ...); never set otherwise
  worker.postMessage({
    type: "init", models: abs(app.dataset.models), vendor: abs(app.dataset.vendor),
    early: early && window.__mmGenreEarly !== false,
    pageStart: performance.timeOrigin + performance.now(), ort: window.__mmGenreOrt ?? {},
  });
}
function post(m) {
  if (sent) sent.push(m);
  worker.postMessage(m);
}
startWorker(true); // first thing: the worker's modules and the stored models load while this page finishes

let spec = null, parts = null, plotParts = null; // the manifest; each part's files; the parts a plot needs (models.js's PLOT)
let busy = false; // a prediction is waiting for its genres
let posterState = null; // null | {id, pending: Promise, ok, preview, w, h}
let posterSeq = 0, predictSeq = 0;
let run = null; // the latest prediction: {id, t0, posterId, fallback, mode, genres, probs, parts, drops, passages}
const waiters = new Map(); // poster id -> resolve
const have = new Set(); // files downloaded or found stored during this visit (progress messages)
let withdrawn = ""; // why a shown result was withdrawn: said until the next prediction (the poster's messages keep it)

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// ---- downloads: stated before, started when the visitor begins, shown per file ------------------

// Every figure is bytes on the wire, the runtime included; files already stored in this browser are
// named as stored, and whatever is still missing is listed file by file.
// After a download the note says what is now stored (or, without Cache Storage, loaded for this visit):
// it never again announces a download that has already happened. data-download-bytes and
// data-poster-bytes keep what the visit started with (the first-visit figures tests compare).
function describeDownload() {
  const files = (ps) => ps.flatMap((p) => parts[p].map((f) => ({ ...f, part: p })));
  const here = (f) => f.cached || have.has(f.name);
  const missing = (ps) => files(ps).filter((f) => !here(f));
  const sum = (fs) => fs.reduce((n, f) => n + f.bytes, 0);
  const list = (fs) => fs.map((f) => `${f.name} ${size(f.bytes)}`).join(", ");
  const plot = plotParts, withPoster = ["poster"];
  const base = missing(plot), extra = missing(withPoster);
  if (app.dataset.downloadBytes === undefined) {
    const atStart = (ps) => files(ps).filter((f) => !f.cached);
    app.dataset.downloadBytes = String(sum(atStart(plot)));
    app.dataset.posterBytes = String(sum(atStart(withPoster)));
    app.dataset.totalBytes = String(sum(files([...plot, ...withPoster])));
  }
  const kept = !!self.caches;
  const keep = kept ? "kept in this browser for later visits and offline use" : "not kept: this page is not on a secure (https) origin, so every visit downloads them again";
  const where = kept ? "Stored in this browser" : "Loaded for this visit (not kept: this page is not on a secure (https) origin)";
  let text;
  if (!base.length && !extra.length) {
    text = kept ? "The models are stored in this browser: nothing to download, and the demo works offline."
      : `${where}: every model. Nothing more to download on this visit.`;
  } else if (base.length === files(plot).length) {
    text = `Runs in your browser. The first prediction downloads ${mb(sum(base))} (${list(base)}, onnxruntime included); ` +
      `a poster adds ${mb(sum(extra))} (${list(extra)}). Downloads start when you begin typing and are ${keep}.`;
  } else {
    const stored = files([...plot, ...withPoster]).filter(here);
    text = `${where}: ${mb(sum(stored))} (${list(stored)}). Still to download: ` +
      (base.length ? `${mb(sum(base))} before the next prediction (${list(base)})` : "nothing for a plot") +
      (extra.length ? `; ${mb(sum(extra))} when you add a poster (${list(extra)}).` : "; nothing for a poster.");
  }
  $("download").textContent = text;
}

let wanted = null; // parts asked for before the manifest arrived
function warm(extra = []) {
  if (!spec) { wanted = [...(wanted ?? []), ...extra]; return; }
  const want = [...plotParts, ...extra];
  // the service worker (the page's offline copy) is registered by site.js on page load, not here
  post({ type: "warm", parts: want });
}

const rows = new Map(); // file -> {li, bar, text}
function progress({ file, got, total, cached }) {
  let r = rows.get(file);
  if (!r) {
    const li = document.createElement("li");
    li.innerHTML = `<span class="name"></span><progress max="1" value="0"></progress><span class="p"></span>`;
    li.querySelector(".name").textContent = file;
    li.querySelector("progress").setAttribute("aria-label", `Downloading ${file}`);
    $("files").append(li);
    r = { li, bar: li.querySelector("progress"), text: li.querySelector(".p") };
    rows.set(file, r);
  }
  r.bar.value = total ? got / total : 0;
  r.text.textContent = cached ? "stored" : `${mb(got)} of ${mb(total)}`;
  const done = [...rows.values()].every((x) => x.bar.value >= 1);
  $("loading").hidden = done;
  if ((cached || (total && got >= total)) && !have.has(file)) {
    have.add(file);
    if (parts) describeDownload();
  }
}

// ---- poster ---------------------------------------------------------------------------------------

const TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp"];

// The poster's own worker (poster-worker.js): this page hands it the poster and draws its preview; it
// gets the manifest and the compiled runtime from worker.js through a MessageChannel, and sends worker.js
// the poster's embedding. Started once the manifest is in (the decoding rules come with it).
let posterWorker = null;
const queued = []; // poster messages from before the manifest
function toPoster(m) {
  if (!spec) { queued.push(m); return; }
  if (!posterWorker) {
    posterWorker = new Worker(new URL("poster-worker.js", abs(app.dataset.worker)), { type: "module" });
    posterWorker.onmessage = onMessage;
    posterWorker.onerror = (e) => status(`The poster's worker failed: ${e.message}`, true);
    const channel = new MessageChannel();
    posterWorker.postMessage({ type: "connect", port: channel.port2 }, [channel.port2]);
    worker.postMessage({ type: "poster-port", port: channel.port1 }, [channel.port1]);
  }
  posterWorker.postMessage(m.type === "poster" ? { ...m, rules: spec.rules.poster } : m);
}

function setPoster(file) {
  const had = !!posterState;
  clearPoster();
  if (!file) return posterChanged();
  // before the manifest arrives: the limit the page states, which the build took from the same manifest
  const maxBytes = spec?.rules.poster.max_bytes ?? Number(app.dataset.posterMaxBytes);
  if (file.type && !TYPES.includes(file.type)) return rejectPoster(`"${file.name}" is not an image file (JPEG, PNG, WebP, GIF).`, had);
  if (file.size > maxBytes) return rejectPoster(`The image is ${mb(file.size)}; the limit is ${maxBytes / 1048576} MB.`, had);
  const id = ++posterSeq;
  const state = { id, ok: false };
  state.pending = new Promise((resolve) => waiters.set(id, resolve));
  posterState = state;
  status("Reading the poster…");
  toPoster({ type: "poster", id, blob: file });
  warm(["poster"]);
  posterChanged();
}

function rejectPoster(message, replaced = false) {
  $("poster").value = "";
  if (replaced) withdraw(); // a result for the poster this one was meant to replace is not shown any more
  status(message, true);
}

// The poster on screen changed (set, replaced or removed). A result is only ever shown for the poster on
// screen: a prediction still running starts again with the new one; a result already shown is withdrawn
// (Predict gives the new one).
function posterChanged() {
  if (!run) return;
  if (busy) predict({ restart: true });
  else if (!$("demo-results").hidden) {
    withdraw();
    withdrawn = "The poster changed: press Predict genres for the genres with it.";
    status(withdrawn);
  }
}

// No result on screen and none coming: the current run (if any) is dropped, its late messages ignored.
function withdraw() {
  run = null;
  $("demo-results").hidden = true;
  $("announce").textContent = "";
  delete app.dataset.result;
  if (busy) done();
}

function clearPoster() {
  if (posterState) waiters.get(posterState.id)?.(false);
  posterState = null;
  queued.length = 0;
  posterWorker?.postMessage({ type: "clear" });
  $("poster-preview").hidden = true;
  $("clear-poster").hidden = true;
  $("cam").hidden = true;
}

function posterReady(m) {
  if (posterState?.id !== m.id) return;
  Object.assign(posterState, { ok: true, w: m.w, h: m.h });
  const c = $("poster-preview");
  c.width = m.w;
  c.height = m.h;
  c.getContext("2d").putImageData(m.preview, 0, 0);
  c.hidden = false;
  $("clear-poster").hidden = false;
  const reduced = m.reduced ? `Large image (${m.width}×${m.height}) reduced to ${m.w}×${m.h} before the model.` : "";
  status([reduced, busy ? "" : withdrawn].filter(Boolean).join(" "));
  waiters.get(m.id)?.(true);
}

function posterFailed(m) {
  if (posterState?.id !== m.id) return;
  waiters.get(m.id)?.(false);
  posterState = null;
  rejectPoster(m.message, true);
}

// ---- results --------------------------------------------------------------------------------------

function row(label, p, threshold) {
  const li = document.createElement("li");
  li.dataset.genre = label;
  li.dataset.prob = String(p);
  li.innerHTML = `<span class="name"></span><span class="bar" aria-hidden="true"><i></i><b></b></span><span class="p"></span>`;
  li.querySelector(".name").textContent = label;
  li.querySelector(".bar i").style.width = `${(100 * p).toFixed(1)}%`;
  li.querySelector(".bar b").style.left = `${(100 * threshold).toFixed(1)}%`;
  li.querySelector(".p").textContent = `${(100 * p).toFixed(1)}%`;
  li.title = `threshold ${(100 * threshold).toFixed(0)}%`;
  return li;
}

function showGenres(m) {
  const { labels } = spec;
  const t = spec.thresholds[m.mode];
  const chosen = new Set(m.genres);
  const order = m.probs.map((p, i) => i).sort((a, b) => m.probs[b] - m.probs[a]);
  $("predicted").replaceChildren(...m.genres.map((i) => row(labels[i], m.probs[i], t[i])));
  $("others").replaceChildren(...order.filter((i) => !chosen.has(i)).map((i) => row(labels[i], m.probs[i], t[i])));
  const fallback = m.genres.length === 1 && m.probs[m.genres[0]] < t[m.genres[0]];
  // a long plot is read whole, in windows the prediction pools (the manifest's rules.windows)
  const windows = m.windows > 1 ? `Read in ${m.windows} windows of ${spec.rules.windows.max_len} tokens, pooled into one prediction with its bag of words. ` : "";
  $("rule").textContent = windows + (fallback ? "No genre reached its threshold, so the most probable one is shown. " : "") +
    `Rule: a genre is predicted when its probability reaches its threshold (tuned for ${m.mode === "plot" ? "plot-only" : "plot + poster"} input; the tick on each bar).`;
  const c = cautionText(m.caution, $("plot").value);
  $("caution").hidden = !c;
  $("caution").textContent = c;
  $("fallback").hidden = !run.fallback;
  $("fallback").textContent = run.fallback ?? "";
  app.dataset.result = JSON.stringify({
    mode: m.mode,
    windows: m.windows,
    genres: m.genres.map((i) => labels[i]),
    probabilities: Object.fromEntries(labels.map((g, i) => [g, m.probs[i]])),
  });
  $("demo-results").hidden = false;
}

// Words as a reader counts them: text written without spaces (Chinese, Japanese, Thai, ...) counts each
// word the browser's segmenter finds (each such character where it has none), not one word per run.
const UNSPACED = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Thai}\p{Script=Lao}\p{Script=Khmer}\p{Script=Myanmar}]/u;
const segmenter = typeof Intl !== "undefined" && Intl.Segmenter ? new Intl.Segmenter(undefined, { granularity: "word" }) : null;
function countWords(text) {
  let n = 0;
  for (const token of text.split(/\s+/u).filter(Boolean)) {
    if (!UNSPACED.test(token)) { n += 1; continue; }
    n += segmenter
      ? Math.max(1, [...segmenter.segment(token)].filter((s) => s.isWordLike).length)
      : [...token].filter((ch) => UNSPACED.test(ch)).length;
  }
  return n;
}

// The worker counts words as curation did (runs between spaces, Python's str.split): a plot written
// without spaces is one "word" there. The caution says what that means in words a reader counts.
function cautionText(c, plot) {
  if (!c) return "";
  if (c.kind !== "short") {
    return `Caution: ${Math.round(100 * c.share)}% of the words are not in the model's vocabulary; this may not be a movie plot. Treat these genres as a guess.`;
  }
  const words = countWords(plot);
  if (words <= c.words) {
    return `Caution: this text has ${words} word${words === 1 ? "" : "s"}; the model learnt from plots of at least ${c.min}. Treat these genres as a guess.`;
  }
  return `Caution: this text has ${words} words but is written mostly without spaces; every plot the model learnt from had at least ${c.min} words separated by spaces. Treat these genres as a guess.`;
}

function drawCam(k) {
  const c = $("cam-canvas"), o = run.cam.overlays[k];
  c.width = o.width;
  c.height = o.height;
  c.getContext("2d").putImageData(o, 0, 0);
  c.setAttribute("aria-label", `Poster heatmap for ${spec.labels[run.cam.genres[k]]}`);
  for (const [j, b] of [...$("cam-genres").children].entries()) b.setAttribute("aria-pressed", String(j === k));
}

function showCam(m) {
  if (m.error || !posterState?.ok || run.posterId !== posterState.id) return; // only for the poster on screen
  run.cam = m;
  app.dataset.cam = JSON.stringify({ dims: m.dims, maps: Object.fromEntries(m.genres.map((g, k) => [spec.labels[g], m.raw[k]])) });
  $("cam-genres").replaceChildren(...m.genres.map((g, k) => button(spec.labels[g], () => drawCam(k))));
  drawCam(0);
  $("cam").hidden = false;
}

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "secondary";
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

const SHOWN_PAST_END = 2000; // characters of text past what the model reads (max_chars) shown as plain text

// The sentences as spans, built once per prediction; updates only restyle them.
function buildWhy() {
  const spans = run.parts.slice(0, run.past).map((part) => {
    const el = document.createElement("span");
    el.textContent = part;
    return el;
  });
  const rest = run.parts.slice(run.past).join("");
  const tail = document.createElement("span");
  tail.className = "past";
  tail.textContent = rest.length > SHOWN_PAST_END ? rest.slice(0, SHOWN_PAST_END) + " …" : rest;
  run.spans = spans;
  $("why-text").replaceChildren(...spans, tail);
}

function showWhy(k) {
  const { labels } = spec;
  const g = run.explained[k];
  const drops = run.spans.map((_, i) => (run.drops[i] ? run.drops[i][g] : null));
  const max = Math.max(1e-6, ...drops.filter((d) => d !== null));
  run.spans.forEach((el, i) => {
    const d = drops[i];
    el.className = d === null ? "pending" : d > 0 ? "why" : "";
    el.style.backgroundColor = d > 0 ? `rgba(36, 84, 166, ${(0.12 + 0.5 * d / max).toFixed(3)})` : "";
    el.title = d > 0 ? `without ${leftOut(i)}, ${labels[g]} falls by ${(100 * d).toFixed(1)} points` : "";
    if (d === null) delete el.dataset.drop; else el.dataset.drop = String(d);
  });
  run.shown = k;
  for (const [j, b] of [...$("why-genres").children].entries()) b.setAttribute("aria-pressed", String(j === k));
}

// What was left out with sentence i: the sentence, or the passage it shares its drop with.
function leftOut(i) {
  const [a, b] = run.passages[run.passageOf[i]];
  return b - a > 1 ? `this passage (sentences ${a + 1}–${b})` : "this sentence";
}

// The progress line while passage g is scored (none after the last): sentence by sentence as each is scored
// alone, or passage by passage when sentences were grouped (explain.js, rules.passages).
function scoring(g) {
  const p = run.passages;
  if (g >= p.length) return "";
  if (!run.grouped) return `Scoring sentence ${g + 1} of ${run.past}…`;
  const [i, j] = p[g];
  return `Scoring passage ${g + 1} of ${p.length} (sentence${j - i > 1 ? `s ${i + 1}–${j}` : ` ${i + 1}`} of ${run.past})…`;
}

function whyStart(m) {
  run.parts = m.parts;
  const zeros = new Array(spec.labels.length).fill(0); // past what the model reads: exactly no effect
  run.drops = m.parts.map((_, i) => (i >= m.past ? zeros : null));
  run.explained = run.genres.slice(0, 6);
  run.past = m.past;
  run.passages = m.passages;
  run.passageOf = m.passages.flatMap(([i, j], g) => new Array(j - i).fill(g));
  run.grouped = m.passages.length < m.past;
  run.ends = m.ends;
  buildWhy();
  run.spans.forEach((el, i) => { el.dataset.passage = String(run.passageOf[i]); });
  $("why-genres").replaceChildren(...run.explained.map((g, k) => button(spec.labels[g], () => showWhy(k))));
  showWhy(0);
  $("why-progress").textContent = scoring(0);
  $("why").hidden = false;
}

let drawPending = false; // restyle the highlighted text at most once per frame
function redrawWhy() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => { drawPending = false; if (run?.spans) showWhy(run.shown ?? 0); });
}

function whyStep(m) {
  for (let i = m.i; i < m.j; i++) run.drops[i] = m.drops; // a passage's sentences share its drop
  $("why-progress").textContent = scoring(m.passage + 1);
  redrawWhy();
}

function whyDone(m) {
  if (run.spans) showWhy(run.shown ?? 0);
  const ms = performance.now() - run.t0;
  app.dataset.whyMs = ms.toFixed(1);
  if (m.parts.length >= 2) {
    const past = m.parts.length - run.past, capped = run.past - m.sentences, n = run.passages.length;
    const runs = `${m.runs} window run${m.runs === 1 ? "" : "s"}`;
    const notes = run.grouped
      ? [`Explained by passage: ${run.past} sentences in ${n} passages, to fit in about ${m.budgetMs / 1000} s (the sentences of a passage share its highlight)`,
        `${m.scored} of ${n} passages re-scored (${runs})`]
      : [`${m.sentences} of ${m.parts.length} sentences re-scored (${runs})`];
    if (past > 0) notes.push(`${past} start after the first ${spec.rules.windows.max_chars} characters, which the model does not read, so leaving them out changes nothing (drop 0)`);
    if (capped > 0) {
      const more = run.grouped ? `${n - m.scored} more passages (${capped} sentences)` : `${capped} more`;
      notes.push(`${more} were not scored (the explanation stops after ${m.budgetMs / 1000} s)`);
    }
    $("why-progress").textContent = notes.join("; ") + ".";
    app.dataset.why = JSON.stringify({
      sentences: run.parts,
      genres: run.explained.map((g) => spec.labels[g]),
      drops: run.drops.map((d) => (d ? run.explained.map((g) => d[g]) : null)),
      passages: run.passages, // [first sentence, past its last] of each, in order (rules.passages)
      ends: run.ends, // the sentences' token boundaries the passages were planned from
      scored: m.scored, // passages scored, in order from the first
      runs: m.runs, // window runs, within budgetMs (explain.js BUDGET_MS)
      budgetMs: m.budgetMs,
      ms: m.ms, // the explanation's own time
    });
  }
  $("timing").textContent = `${run.timing} · explanation in ${(ms / 1000).toFixed(1)} s`;
}

// ---- predict --------------------------------------------------------------------------------------

// restart: the poster changed while a prediction ran (that one is dropped); fallback: the poster could not
// be used (its model not stored, and offline), so the plot alone is scored and the result says why.
async function predict({ restart = false, fallback = null } = {}) {
  if (busy && !restart) return; // one prediction at a time (also for Ctrl+Enter and clicks while aria-disabled)
  const plot = $("plot").value.trim();
  if (!plot) {
    if (restart) withdraw();
    status("Please paste a plot first: a sentence or more about the movie.", true);
    $("plot").focus();
    return;
  }
  busy = true;
  withdrawn = "";
  // aria-disabled, not disabled: a disabled button drops the keyboard focus to <body>; this one keeps it
  $("predict").setAttribute("aria-disabled", "true");
  app.setAttribute("aria-busy", "true");
  const id = ++predictSeq;
  run = { id, t0: performance.now(), fallback };
  app.dataset.runs = String(predictSeq);
  delete app.dataset.whyMs;
  delete app.dataset.shownMs;
  const poster = fallback ? null : posterState; // the poster on screen when Predict was pressed
  warm(poster ? ["poster"] : []);
  try {
    if (poster && !poster.ok) {
      status("Waiting for the poster to be read…");
      await poster.pending;
    }
    if (run?.id !== id) return; // the poster changed meanwhile: a newer run has taken over
    const withPoster = !!poster?.ok && poster === posterState;
    run.posterId = withPoster ? poster.id : null;
    const ready = [...plotParts ?? [], ...(withPoster ? ["poster"] : [])].every(stored);
    status(parts && ready ? "Predicting…" : "Loading the models (progress below)…");
    $("why").hidden = true;
    $("cam").hidden = true;
    post({ type: "predict", id, plot, posterId: run.posterId });
  } catch (e) {
    status(`Something went wrong: ${e.message}`, true);
    done();
  }
}

// Offline, or the network failed: what the demo still has stored decides what it can do.
const OFFLINE = /failed to fetch|networkerror|network error|load failed|err_internet_disconnected/i;
const offline = (message) => !navigator.onLine || OFFLINE.test(message ?? "");
const stored = (part) => !!parts?.[part]?.every((f) => f.cached || have.has(f.name));

// A prediction failed. With a poster whose model is not stored (and the network gone), the plot alone is
// scored instead, and the result says so; otherwise the failure is explained in plain words.
function failed(m) {
  const withPoster = !!run?.posterId;
  if (withPoster && !stored("poster")) {
    const why = offline(m.message)
      ? `You seem to be offline, and the poster model is not stored in this browser yet, so your poster could not be read.`
      : `Your poster could not be used (${m.message}).`;
    predict({ restart: true, fallback: `${why} These genres come from the plot alone; press Predict genres again when you are back online to add the poster.` });
    return;
  }
  if (offline(m.message) && !(stored("text") && stored("head") && stored("runtime"))) {
    status("You seem to be offline, and the models are not stored in this browser yet: the demo needs the network once to download them.", true);
  } else status(`Something went wrong: ${m.message}`, true);
  done();
}

function done() {
  busy = false;
  $("predict").removeAttribute("aria-disabled");
  app.removeAttribute("aria-busy");
}

// The genres, and only they (not the timing line), are read out by screen readers: a polite live region.
function announce(m) {
  const names = m.genres.map((i) => spec.labels[i]).join(", ");
  const text = `Predicted genres: ${names} (${m.mode === "plot" ? "plot only" : "plot + poster"}).` +
    (run.fallback ? " Your poster was not used: see the note above the genres." : "");
  const region = $("announce");
  region.textContent = "";
  // emptied, then filled a moment later: a change screen readers announce even when the genres repeat
  setTimeout(() => { if (run?.id === m.id) region.textContent = text; }, 100);
}

function genres(m) {
  if (m.id !== run?.id) return;
  const ms = performance.now() - run.t0;
  run.genres = m.genres;
  showGenres(m);
  announce(m);
  status("");
  app.dataset.genresMs = ms.toFixed(1);
  // ms since navigation at the start of the frame that paints the genres (now, in a hidden tab, which
  // paints none): bench/browser.py's page load → genres on the page's own clock (a test driver polling
  // the DOM saw them up to 0.46 s later, 2026-12-04)
  const shown = (t) => { if (run?.id === m.id) app.dataset.shownMs = t.toFixed(1); };
  if (document.hidden) shown(performance.now()); else requestAnimationFrame(shown);
  app.dataset.modelMs = m.runMs.toFixed(1);
  app.dataset.modelParts = JSON.stringify(m.parts); // each model's own run time, ms (bench/browser.py)
  // where the time went, each phase's start in ms since this page's navigation (bench/browser.py reads it)
  const since = (at) => +(at - performance.timeOrigin).toFixed(1);
  app.dataset.phases = JSON.stringify(Object.fromEntries(Object.entries(m.phases).map(([k, v]) => [k, { start: since(v.at), ms: +v.ms.toFixed(1) }])));
  const load = m.loadMs > 50 ? ` (${(m.loadMs / 1000).toFixed(1)} s of it loading the models)` : "";
  run.timing = `Genres in ${ms < 1000 ? ms.toFixed(0) + " ms" : (ms / 1000).toFixed(1) + " s"}${load}, ${m.mode === "plot" ? "plot only" : "plot + poster"}, in your browser`;
  $("timing").textContent = run.timing;
  done();
}

function onMessage({ data: m }) {
  switch (m.type) {
    case "restart":
      app.dataset.restarts = String(Number(app.dataset.restarts ?? 0) + 1); // tests/test_browser.py
      worker.terminate();
      startWorker(false);
      for (const x of sent) worker.postMessage(x);
      break;
    case "spec":
      spec = m.spec;
      sent = null;
      for (const x of queued.splice(0)) toPoster(x);
      parts = m.parts;
      plotParts = m.plot;
      describeDownload();
      app.dataset.ready = "1";
      app.dataset.readyMs = performance.now().toFixed(1);
      if (wanted) warm(wanted);
      break;
    case "progress": progress(m); break;
    case "stage": if (busy && (m.id === undefined || m.id === run?.id)) status(m.text); break; // no id: loading
    case "poster": posterReady(m); break;
    case "poster-error": posterFailed(m); break;
    case "genres": genres(m); break;
    case "cam": if (m.id === run?.id) showCam(m); break;
    case "why-start": if (m.id === run?.id) whyStart(m); break;
    case "why": if (m.id === run?.id) whyStep(m); break;
    case "why-done": if (m.id === run?.id) whyDone(m); break;
    case "error":
      if (m.during === "predict") { if (m.id === run?.id) failed(m); break; }
      if (m.during === "warm" && offline(m.message)) {
        // typing started downloads the network cannot deliver: a prediction that needs them says so again
        status("You seem to be offline: the models this needs are not stored in this browser yet.", true);
        break;
      }
      status(`Something went wrong: ${m.message}`, true);
      if (m.during === "init") $("download").textContent = `The demo could not start: ${m.message}.`;
      break;
  }
}

$("predict").addEventListener("click", predict);
$("plot").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); predict(); }
});
$("plot").addEventListener("input", () => warm(posterState ? ["poster"] : []), { once: true });
for (const b of document.querySelectorAll("button.example")) {
  b.addEventListener("click", () => { $("plot").value = b.dataset.plot; $("plot").focus(); warm(); });
}
$("poster").addEventListener("change", (e) => setPoster(e.target.files[0]));
$("clear-poster").addEventListener("click", () => { $("poster").value = ""; clearPoster(); status(""); });
const zone = $("dropzone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  setPoster(e.dataTransfer.files[0]);
});
