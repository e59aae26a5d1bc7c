// Page helpers for every reader: the offline copy of the site (sw.js, registered on every page once it
// has loaded), figures open full-size (a lightbox; the image link works without JavaScript too), and
// any table not already wrapped gets a keyboard-focusable scrolling region.

// sw.js: the layout names it on <body data-sw> (else: the site's root, two folders above this file).
// Its update check bypasses the HTTP cache (GitHub Pages: max-age=600), so a deploy's new shell version
// (assets/vendor/shell.js) is seen on the next visit. Registered after the load event: its install
// fetches the shell, which must not compete with the page's own requests.
if ("serviceWorker" in navigator) {
  const sw = document.body.dataset.sw ?? new URL("../../sw.js", import.meta.url).href;
  const register = () => navigator.serviceWorker.register(sw, { updateViaCache: "none" }).catch(() => {});
  if (document.readyState === "complete") register();
  else addEventListener("load", register, { once: true });
}

const dialog = document.createElement("dialog");
dialog.className = "lightbox";
dialog.innerHTML = `<form method="dialog"><button class="close" aria-label="Close full-size figure">×</button></form><img alt="">`;
document.body.append(dialog);
dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });

for (const img of document.querySelectorAll("main figure img, main img.figure")) {
  if (img.closest("a, .demo")) continue;
  const a = document.createElement("a");
  a.href = img.currentSrc || img.src;
  a.className = "zoom";
  a.setAttribute("aria-label", `Open full-size: ${img.alt || "figure"}`);
  img.replaceWith(a);
  a.append(img);
  a.addEventListener("click", (e) => {
    e.preventDefault();
    const big = dialog.querySelector("img");
    big.src = a.href;
    big.alt = img.alt;
    dialog.showModal();
  });
}

for (const table of document.querySelectorAll("main table")) {
  if (table.parentElement.classList.contains("table-wrap")) continue;
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  wrap.tabIndex = 0;
  wrap.setAttribute("role", "region");
  const caption = table.caption?.textContent.trim() || table.closest("section")?.querySelector("h2, h3")?.textContent.trim();
  wrap.setAttribute("aria-label", caption ? `Table: ${caption}` : "Table");
  table.replaceWith(wrap);
  wrap.append(table);
}

// A table wider than the screen scrolls inside its region: say so above it (and keep saying it only
// while it is true: the hint follows the region's width), so no column is hidden without a hint.
for (const wrap of document.querySelectorAll("main .table-wrap")) {
  const hint = document.createElement("p");
  hint.className = "scroll-hint";
  hint.setAttribute("aria-hidden", "true");
  hint.textContent = "↔ wider than the screen: scroll the table sideways";
  wrap.before(hint);
  const update = () => {
    const wide = wrap.scrollWidth > wrap.clientWidth + 1;
    wrap.classList.toggle("scrolls", wide);
    hint.classList.toggle("shown", wide);
  };
  new ResizeObserver(update).observe(wrap);
  update();
}

// code blocks that scroll sideways (on a phone) take the keyboard too
for (const pre of document.querySelectorAll("main pre")) pre.tabIndex = 0;
