// mm-genre's service worker: the site readable offline. It keeps one thing, the shell that
// assets/vendor/shell.js lists (written at build time by scripts/vendor.mjs): the pages, css, js, the
// site's figures and images, and the models' manifest; never a model or the wasm runtime (the demo's
// worker keeps those itself, in assets/js/downloads.js, keyed by their sha256).
//  - install: this version's shell is fetched (past the HTTP cache, each file but the pages checked
//    against its sha256) into a cache named by the shell's version, a digest of its content: a deploy
//    that changes any of it installs this worker anew, which fills its own shell and deletes the old one.
//    Nothing else is ever written to it, so a version's shell holds that version's files only.
//  - fetch: a GET of a shell file goes to the network first; when the network fails, or has not
//    answered within TIMEOUT_MS, the shell's copy answers (a connection that neither fails nor
//    answers does not hang the page). While such a request is still unanswered, the network is
//    presumed hanging and the shell answers at once. Every other request is left to the browser.
importScripts("assets/vendor/shell.js");
const SHELL = `mm-genre-shell-${self.SHELL.version}`;
const TIMEOUT_MS = 3000;

// a shell file's key: its URL without query or fragment, a folder's index.html as the folder
const keyOf = (url) => {
  const u = new URL(url, location.href);
  u.search = "";
  u.hash = "";
  u.pathname = u.pathname.replace(/\/index\.html$/, "/");
  return u.href;
};
const KEPT = new Set(self.SHELL.files.map(keyOf));

self.addEventListener("install", (event) => {
  const requests = self.SHELL.files.map((f) => new Request(f, { cache: "no-cache", integrity: self.SHELL.integrity?.[f] ?? "" }));
  event.waitUntil(caches.open(SHELL).then((c) => c.addAll(requests)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) if (name.startsWith("mm-genre-shell-") && name !== SHELL) await caches.delete(name);
    await self.clients.claim();
  })());
});

// Which shell this worker keeps, for a page that asks (tests/test_browser.py: the worker in charge after
// a redeploy is the new one): the answer goes to the MessagePort sent with "shell".
self.addEventListener("message", (event) => {
  if (event.data === "shell") event.ports[0]?.postMessage(SHELL);
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const key = keyOf(req.url);
  if (!KEPT.has(key)) return; // not in the shell: the browser fetches it as if there were no worker
  event.respondWith(networkFirst(req, key));
});

let hanging = 0; // requests that passed the timeout and are still unanswered

async function networkFirst(req, key) {
  const kept = caches.open(SHELL).then((c) => c.match(key, { ignoreVary: true })).catch(() => undefined);
  if (hanging > 0) {
    const copy = await kept;
    if (copy) return copy;
  }
  const network = fetch(req);
  let late = false;
  const settle = () => { if (late) { late = false; hanging--; } };
  network.then(settle, settle);
  const timeout = new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS, "timeout"));
  try {
    const first = await Promise.race([network, timeout]);
    if (first !== "timeout") return first;
    const copy = await kept;
    if (!copy) return await network; // nothing kept: the network is all there is
    late = true; // the network has not answered: until it does (or fails), the shell answers at once
    hanging++;
    return copy;
  } catch {
    return (await kept) ?? Response.error();
  }
}
