// Downloads the demo keeps: each file the manifest (or assets/vendor/runtime.json) lists with
// {bytes, sha256} is stored in Cache Storage under "URL?sha256=DIGEST", so a key always names its
// content and a redeploy (same URL, new digest) can never be answered with old bytes.
//  - A stored key is used as is: nothing is stored before its bytes matched the digest.
//  - A missing key is fetched with cache: "no-cache" (the HTTP cache revalidates with the server, so a
//    max-age=600 copy of the old file is not reused), checked (crypto.subtle, or sha256.js where the
//    page has no secure context), stored, and the file's other versions are deleted. A mismatch is
//    fetched once more past the HTTP cache (cache: "reload") before it is an error.
//  - Without Cache Storage (an insecure origin has none) the same checks run on every visit.
import { sha256 } from "./sha256.js";

const CACHE = "mm-genre-models";
let opened = null; // one open per visit, not one per file
const store = () => (opened ??= self.caches ? caches.open(CACHE).catch(() => null) : Promise.resolve(null)); // null: nothing kept
const keyOf = (url, info) => `${url}?sha256=${info.sha256}`;

async function digest(bytes) {
  if (!self.crypto?.subtle) return sha256(bytes);
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function download(url, name, total, mode, onProgress) {
  const res = await fetch(url, { cache: mode });
  if (!res.ok) throw new Error(`${name}: HTTP ${res.status}`);
  const reader = res.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    onProgress({ file: name, got, total });
  }
  if (chunks.length === 1) return chunks[0];
  const bytes = new Uint8Array(got);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  return bytes;
}

async function verified(url, name, info, onProgress) {
  for (const mode of ["no-cache", "reload"]) {
    const bytes = await download(url, name, info.bytes, mode, onProgress);
    if (bytes.length === info.bytes && (await digest(bytes)) === info.sha256) return bytes;
  }
  throw new Error(`${name} does not match the manifest (sha256): the site may be mid-update; reload the page in a minute`);
}

// The file as a Response (content-type `type`): from Cache Storage when stored, else downloaded and checked.
export async function open(url, name, info, onProgress, type = "application/octet-stream") {
  const cache = await store();
  const key = keyOf(url, info);
  const hit = await cache?.match(key);
  if (hit) {
    onProgress({ file: name, got: info.bytes, total: info.bytes, cached: true });
    return hit;
  }
  const bytes = await verified(url, name, info, onProgress);
  const headers = { "content-type": type, "content-length": String(bytes.length) };
  if (!cache) return new Response(bytes, { headers });
  try {
    await cache.put(key, new Response(bytes, { headers }));
    for (const req of await cache.keys()) if (req.url.startsWith(url + "?") && req.url !== key) await cache.delete(req);
  } catch {
    return new Response(bytes, { headers }); // the browser would not keep it (quota): used this visit only
  }
  return (await cache.match(key)) ?? new Response(bytes, { headers });
}

export async function bytes(url, name, info, onProgress) {
  return new Uint8Array(await (await open(url, name, info, onProgress)).arrayBuffer());
}

export async function isStored(url, info) {
  return !!(await (await store())?.match(keyOf(url, info)));
}

// Deletes every stored file whose key is not among `current` ([url, info] pairs): the versions a
// redeploy replaced, the files it no longer lists, and the plain-URL copies of the manifest and
// runtime.json that earlier versions of this file kept here (sw.js's shell keeps those now).
export async function evictAllBut(current) {
  const cache = await store();
  if (!cache) return;
  const keep = new Set(current.map(([url, info]) => keyOf(url, info)));
  for (const req of await cache.keys()) if (!keep.has(req.url)) await cache.delete(req);
}

// The copy of a JSON file (the manifest, runtime.json) this browser kept from an earlier visit, or null:
// sw.js's shell holds both (its active version's; during a redeploy, the shell installed first).
export async function stored(url) {
  try {
    return (await (await self.caches?.match(url, { ignoreVary: true }))?.json()) ?? null;
  } catch {
    return null;
  }
}

// JSON that changes with a deploy (the manifest, runtime.json), revalidated with the server (the HTTP
// cache may hold a max-age=600 copy). Offline, or when the network does not answer, sw.js answers with
// its shell's copy: the network-first rule lives there only.
export async function json(url) {
  let res;
  try {
    res = await fetch(url, { cache: "no-cache" });
  } catch (e) {
    throw new Error(`${url.split("/").pop()} is not reachable (${e.message}) and this browser keeps no copy`);
  }
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}
