// mm-genre's service worker: an offline copy of the site. Same-origin GETs go to the network first
// and fall back to the last copy kept here, so updates show when online and the demo opens offline.
// Model files and the wasm runtime are not kept here: the demo's worker (assets/js/worker.js) keeps
// them in Cache Storage keyed by their sha256, and reads them from there on later visits.
const SHELL = "mm-genre-shell-v1";
const PRECACHE = [
  "./", "assets/css/site.css", "assets/js/demo.js", "assets/js/worker.js", "assets/js/site.js",
  "assets/vendor/ort.wasm.min.mjs", "assets/vendor/tokenizers.min.mjs", "assets/vendor/runtime.json",
  "assets/models/manifest.json", "assets/images/favicon.svg",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((c) => c.addAll(PRECACHE)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== location.origin) return;
  if (/\.(onnx|wasm)$/.test(url.pathname) || /\/assets\/models\/(?!manifest\.json)/.test(url.pathname)) return;
  event.respondWith(
    fetch(req)
      .then((res) => {
        if (res.ok && res.type === "basic") {
          const copy = res.clone();
          event.waitUntil(caches.open(SHELL).then((c) => c.put(req, copy)));
        }
        return res;
      })
      .catch(async () => (await caches.match(req, { ignoreSearch: true })) ?? (await caches.match(req, { ignoreVary: true })) ?? Response.error())
  );
});
