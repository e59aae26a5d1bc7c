// mm-genre's service worker: an offline copy of the site. Same-origin GETs go to the network first
// and fall back to the last copy kept here, so updates show when online and the demo opens offline.
// Model files and the wasm runtime are not kept here: the demo's worker (assets/js/downloads.js) keeps
// them in Cache Storage keyed by their sha256 and serves them to itself on later visits.
// assets/vendor/shell.js (written at build time by scripts/vendor.mjs) names the shell's files and its
// version, a digest of their content: a deploy that changes any of them installs this worker anew,
// which precaches the new shell and deletes the old one.
importScripts("assets/vendor/shell.js");
const SHELL = `mm-genre-shell-${self.SHELL.version}`;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((c) => c.addAll(self.SHELL.files.map((f) => new Request(f, { cache: "no-cache" })))).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name.startsWith("mm-genre-shell-") && name !== SHELL) await caches.delete(name);
    await self.clients.claim();
  })());
});

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
      .catch(async () => {
        const shell = await caches.open(SHELL);
        return (await shell.match(req, { ignoreSearch: true })) ?? (await shell.match(req, { ignoreVary: true })) ?? Response.error();
      })
  );
});
