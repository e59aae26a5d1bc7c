"""Stage `figures`: every figure and table on the site, drawn from the other stages' saved outputs.

Nothing here trains: it reads the cached outputs (pulling a stage through the cache only if it has
never run). PNGs and SVGs go to assets/figures/, their numbers and captions to _data/.
"""

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

from . import data, evaluate, explain, finetune, fusion, topics  # noqa: E402

plt.rcParams.update(
    {"figure.dpi": 110, "savefig.bbox": "tight", "font.size": 10, "axes.spines.top": False, "axes.spines.right": False}
)
BLUE, ORANGE, GREEN, GREY = "#2454a6", "#e07b39", "#2f9e66", "#9aa3b2"


def save(fig, path: Path):
    fig.savefig(path)
    plt.close(fig)


def genre_distribution(movies, labels, y, path):
    fig, ax = plt.subplots(figsize=(8, 4))
    order = np.argsort(-y.sum(0))
    left = np.zeros(len(labels))
    for s, colour in zip(("train", "val", "test"), (BLUE, ORANGE, GREEN)):
        counts = y[movies.split.to_numpy() == s].sum(0)[order]
        ax.barh(np.array(labels)[order], counts, left=left[: len(order)], color=colour, label=s)
        left = left + counts
    ax.invert_yaxis()
    ax.set_xlabel("movies")
    ax.legend(frameon=False)
    ax.set_title("Genres in the curated data, by split")
    save(fig, path)


def balancing(labels, y, train, path):
    """Training-split genre counts as they are, and as the seed's balancing resamples them (expected)."""
    before = y[train].sum(0)
    after = fusion.balance_weights(y[train], 1.0) @ y[train] * train.sum()
    order = np.argsort(-before)
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, before[order], 0.4, color=BLUE, label="training split")
    ax.bar(x + 0.2, after[order], 0.4, color=ORANGE, label="after balancing (expected)")
    ax.set_xticks(x, np.array(labels)[order], rotation=60, ha="right")
    ax.set_ylabel("movies")
    ax.legend(frameon=False)
    ax.set_title("Genre counts before and after balancing (training split only)")
    save(fig, path)


def genres_per_movie(y, path):
    fig, ax = plt.subplots(figsize=(5, 3))
    counts = y.sum(1).astype(int)
    values = np.arange(1, counts.max() + 1)
    ax.bar(values, [(counts == v).sum() for v in values], color=BLUE)
    ax.set_xlabel("genres per movie")
    ax.set_ylabel("movies")
    ax.set_xticks(values)
    save(fig, path)


def cooccurrence(labels, y, path):
    both = y.T @ y
    cond = both / np.maximum(np.diag(both)[:, None], 1)  # P(column genre | row genre)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(cond, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_title("P(column genre | row genre)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    save(fig, path)


def training_curves(tuned_history, fusion_history, path):
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"wspace": 0.45})
    e = [h["epoch"] for h in tuned_history]
    a.plot(e, [h["train_loss"] for h in tuned_history], "o-", color=BLUE, label="train loss")
    a.plot(e, [h["val_loss"] for h in tuned_history], "o-", color=ORANGE, label="val loss")
    a2 = a.twinx()
    a2.spines["right"].set_visible(True)
    a2.plot(e, [h["val_micro_f1"] for h in tuned_history], "s--", color=GREEN, label="val micro-F1 @0.5")
    a2.set_ylim(0, 1)
    a2.set_ylabel("val micro-F1", color=GREEN)
    a.set_xticks(e)
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.set_title("Text fine-tuning")
    a.legend(loc="upper right", frameon=False, fontsize=8)
    a2.legend(loc="center right", frameon=False, fontsize=8)
    e = [h["epoch"] for h in fusion_history]
    b.plot(e, [h["train_loss"] for h in fusion_history], color=BLUE, label="train loss")
    b.plot(e, [h["val_loss"] for h in fusion_history], color=ORANGE, label="val loss")
    b.set_xlabel("epoch")
    b.set_ylabel("loss")
    b.set_title("Fusion head (best val loss kept)")
    b.legend(frameon=False, fontsize=8)
    save(fig, path)


def per_genre_f1(metrics, path):
    by_id = {m["id"]: m for m in metrics["models"]}
    shown = [("fusion", BLUE), ("text_finetuned", ORANGE), ("poster_mlp", GREEN)]
    labels = sorted(metrics["labels"], key=lambda g: -by_id["fusion"]["per_genre"][g]["f1"])
    fig, ax = plt.subplots(figsize=(8, 5.5))
    h = 0.27
    for k, (mid, colour) in enumerate(shown):
        ax.barh(
            np.arange(len(labels)) + k * h,
            [by_id[mid]["per_genre"][g]["f1"] for g in labels],
            h,
            color=colour,
            label=by_id[mid]["name"],
        )
    ax.set_yticks(np.arange(len(labels)) + h, labels)
    ax.invert_yaxis()
    ax.set_xlabel("F1 on the test split")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    save(fig, path)


def pr_curves(probs, y, te, names, path):
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for mid, colour in zip(
        ("fusion", "fusion_plot_only", "text_finetuned", "concat_lr", "tfidf_lr", "poster_mlp"),
        (BLUE, "#6f8fd1", ORANGE, GREY, "#c9a227", GREEN),
    ):
        p, r, _ = precision_recall_curve(y[te].ravel(), probs[mid][te].ravel())
        ax.plot(r, p, color=colour, label=names[mid])
    ax.set_xlabel("recall (micro)")
    ax.set_ylabel("precision (micro)")
    ax.set_title("Precision-recall, test split")
    ax.legend(frameon=False, fontsize=7)
    save(fig, path)


def threshold_curve(probs, y, va, te, path):
    grid = evaluate.GRID
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for rows, name, colour in ((va, "validation", ORANGE), (te, "test", BLUE)):
        ax.plot(grid, [evaluate.f1(y[rows], probs["fusion"][rows] >= t) for t in grid], color=colour, label=name)
    ax.set_xlabel("one global threshold")
    ax.set_ylabel("micro-F1")
    ax.set_title("Fusion model: micro-F1 against a global threshold")
    ax.legend(frameon=False)
    save(fig, path)


def ablation(metrics, path):
    by_id = {m["id"]: m for m in metrics["models"]}
    rows = [("plot only", "fusion_plot_only"), ("poster only", "poster_mlp"), ("plot + poster", "fusion")]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [by_id[m]["micro_f1"] for _, m in rows], 0.4, color=BLUE, label="micro-F1")
    ax.bar(x + 0.2, [by_id[m]["macro_f1"] for _, m in rows], 0.4, color=ORANGE, label="macro-F1")
    ax.set_xticks(x, [r for r, _ in rows])
    ax.set_ylim(0, 1)
    ax.legend(frameon=False)
    ax.set_title("Which input carries the signal (test split)")
    save(fig, path)


def reliability(probs, y, te, path, bins=10):
    p, t = probs["fusion"][te].ravel(), y[te].ravel()
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    mean_p = [p[which == b].mean() for b in range(bins) if (which == b).any()]
    freq = [t[which == b].mean() for b in range(bins) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], ":", color=GREY, label="perfectly calibrated")
    ax.plot(mean_p, freq, "o-", color=BLUE, label="fusion model")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("Reliability, test split (all genres)")
    ax.legend(frameon=False, fontsize=8)
    save(fig, path)
    return float(
        np.sum(
            [
                (which == b).sum() * abs(p[which == b].mean() - t[which == b].mean())
                for b in range(bins)
                if (which == b).any()
            ]
        )
        / len(p)
    )


def topic_figures(summary, coords, assigned, labels, out):
    shown = summary["topics"][:12]
    if not shown:  # tiny data can leave every movie an outlier: say so instead of drawing nothing
        for name in ("topics_top.png", "topic_genres.png"):
            fig, ax = plt.subplots(figsize=(5, 1.2))
            ax.text(0.5, 0.5, "no topics found (every movie is an outlier)", ha="center", va="center")
            ax.axis("off")
            save(fig, out / name)
    else:
        topic_words(shown, out / "topics_top.png")
        topic_genres(shown, labels, out / "topic_genres.png")
    topic_map(shown, coords, assigned, out / "topic_map.png")


def topic_words(shown, path):
    fig, axes = plt.subplots(3, 4, figsize=(11, 7))
    for ax, t in zip(axes.ravel(), shown):
        ax.set_title(f"{t['name']} ({t['size']})", fontsize=8)
        ax.barh(t["words"][:6][::-1], t["scores"][:6][::-1], color=BLUE)
        ax.set_xticks([])
        ax.tick_params(axis="y", labelsize=8)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    fig.suptitle("Largest topics and their top words (BERTopic, c-TF-IDF order)")
    fig.tight_layout()
    save(fig, path)


def topic_genres(shown, labels, path):
    matrix = np.array([[t["genres"][g] for g in labels] for t in shown])
    fig, ax = plt.subplots(figsize=(9, 5))
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(shown)), [t["name"] for t in shown], fontsize=8)
    ax.set_title("Share of each topic's movies that carry each genre")
    fig.colorbar(im, ax=ax, fraction=0.03)
    save(fig, path)


def topic_map(shown, coords, assigned, path):
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(*coords[assigned == -1].T, s=3, color="#d0d4dc", label="no topic")
    cmap = plt.get_cmap("tab20")
    for k, t in enumerate(shown):
        pts = coords[assigned == t["id"]]
        ax.scatter(*pts.T, s=5, color=cmap(k % 20), label=t["name"])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("Movies by plot embedding (UMAP 2-D), coloured by topic")
    ax.legend(frameon=False, fontsize=6, markerscale=3, loc="center left", bbox_to_anchor=(1, 0.5))
    save(fig, path)


def topic_html(summary, coords, assigned, titles, path):
    """The interactive map: plotly, its JS served by the site (assets/vendor), hover shows titles only."""
    import plotly.graph_objects as go

    names = {t["id"]: t["name"] for t in summary["topics"]}
    fig = go.Figure()
    for tid in [-1] + [t["id"] for t in summary["topics"][:20]]:
        rows = assigned == tid
        fig.add_trace(
            go.Scattergl(
                x=coords[rows, 0],
                y=coords[rows, 1],
                mode="markers",
                name=names.get(tid, "no topic"),
                text=titles[rows],
                hoverinfo="text+name",
                marker={"size": 5 if tid != -1 else 3},
            )
        )
    fig.update_layout(
        template="simple_white",
        height=650,
        title="Plot topics (hover for titles)",
        xaxis={"visible": False},
        yaxis={"visible": False},
    )
    body = fig.to_html(include_plotlyjs=False, full_html=False, div_id="topic-map")  # a fixed id: same output every run
    path.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mm-genre: interactive topic map</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<script src="../vendor/plotly.min.js"></script></head><body>' + body + "</body></html>"
    )


def architecture_svg(spec: dict, path: Path):
    """The model diagram, with its sizes read from the export manifest."""
    te, pe = spec["text_encoder"], spec["poster_encoder"]
    size = pe["preprocessing"]["resize_in_model"]
    boxes = [
        (20, 30, "Plot text", f"WordPiece, ≤ {te['max_len']} tokens"),
        (250, 30, "Text encoder", f"fine-tuned MiniLM-L6 → mean pool ({te['dim']}-d)"),
        (20, 150, "Poster (optional)", "RGB pixels, any size"),
        (250, 150, "Poster encoder", f"resize {size[0]}×{size[1]} → EfficientNet-Lite0 ({pe['dim']}-d)"),
        (520, 90, "Fusion head", f"[text, poster·has, has] → MLP → {len(spec['labels'])} sigmoids"),
    ]
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 800 240" role="img" font-family="system-ui, sans-serif">',
        "<title>Model architecture: text encoder, poster encoder, fusion head</title>",
        '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0 0L10 5L0 10z" fill="#5b6475"/></marker></defs>',
        '<rect width="800" height="240" fill="#ffffff"/>',
    ]
    for x, y, title, sub in boxes:
        w = 250 if x == 520 else 200
        parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="60" rx="8" fill="#dbe6fb" stroke="#2454a6"/>')
        parts.append(
            f'<text x="{x + w / 2}" y="{y + 25}" text-anchor="middle" font-size="14" font-weight="600" fill="#1d2230">{title}</text>'
        )
        parts.append(
            f'<text x="{x + w / 2}" y="{y + 45}" text-anchor="middle" font-size="10" fill="#1d2230">{sub}</text>'
        )
    for x1, y1, x2, y2 in ((220, 60, 248, 60), (220, 180, 248, 180), (450, 60, 518, 110), (450, 180, 518, 130)):
        parts.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#5b6475" stroke-width="2" marker-end="url(#a)"/>'
        )
    parts.append(
        '<text x="645" y="185" text-anchor="middle" font-size="11" fill="#5b6475">per-genre thresholds → genres</text>'
    )
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def samples(movies, n, seed, out_dir: Path) -> list[dict]:
    """A few curated movies for the data table: no overview text, a small poster thumbnail."""
    rows = np.random.default_rng(seed).choice(np.flatnonzero((movies.poster != "").to_numpy()), size=n, replace=False)
    out = []
    for r in sorted(rows):
        tid = int(movies.tmdb_id[r])
        with Image.open(movies.poster[r]) as im:
            im.convert("RGB").resize((46, 69)).save(out_dir / f"{tid}.jpg", quality=80)
        out.append(
            {
                "tmdb_id": tid,
                "title": movies.title[r],
                "year": str(movies.release_date[r])[:4],
                "genres": movies.genres[r].replace("|", ", "),
                "words": len(movies.overview[r].split()),
                "thumb": f"thumbs/{tid}.jpg",
            }
        )
    return out


def run(cfg) -> Path:
    curated, tuned, trained, evaluated = data.run(cfg), finetune.run(cfg), fusion.run(cfg), evaluate.run(cfg)
    topic_out, explained = topics.run(cfg), explain.run(cfg)
    out = cfg.path("figures")
    for sub in ("thumbs", "gradcam"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    movies, labels, y = data.load(curated)
    metrics = evaluate.load(evaluated)
    probs = dict(np.load(evaluated / "probs.npz"))
    split = movies.split.to_numpy()
    va, te = split == "val", split == "test"
    names = {m["id"]: m["name"] for m in metrics["models"]}
    genre_distribution(movies, labels, y, out / "genre_distribution.png")
    genres_per_movie(y, out / "genres_per_movie.png")
    balancing(labels, y, split == "train", out / "balancing.png")
    cooccurrence(labels, y, out / "cooccurrence.png")
    training_curves(
        json.loads((tuned / "history.json").read_text()),
        json.loads((trained / "history.json").read_text()),
        out / "training_curves.png",
    )
    per_genre_f1(metrics, out / "per_genre_f1.png")
    pr_curves(probs, y, te, names, out / "pr_curves.png")
    threshold_curve(probs, y, va, te, out / "threshold_curve.png")
    ablation(metrics, out / "ablation.png")
    ece = reliability(probs, y, te, out / "reliability.png")
    summary = json.loads((topic_out / "topics.json").read_text())
    coords, assigned = np.load(topic_out / "coords.npy"), np.load(topic_out / "assigned.npy")
    topic_figures(summary, coords, assigned, labels, out)
    topic_html(summary, coords, assigned, movies.title.to_numpy(), out / "topics_map.html")
    architecture_svg(json.loads((cfg.path("models") / "manifest.json").read_text()), out / "architecture.svg")
    gallery = json.loads((explained / "gradcam.json").read_text())
    for f in explained.path.glob("*.jpg"):
        shutil.copy(f, out / "gradcam" / f.name)
    site = cfg.path("site_data")
    facts = {
        "genres_per_movie_mean": float(y.sum(1).mean()),
        "expected_calibration_error": ece,
        "samples": samples(movies, cfg.sample_rows, cfg.seed, out / "thumbs"),
        "finetune_epochs_run": len(json.loads((tuned / "history.json").read_text())),
        "fusion_epochs_run": len(json.loads((trained / "history.json").read_text())),
    }
    (site / "figures.json").write_text(json.dumps(facts, indent=1))
    paths = {"data", "work", "site_data", "models", "figures"}
    (site / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k not in paths}, indent=1))
    (site / "gradcam.json").write_text(json.dumps(gallery, indent=1))
    print(f"[figures] written to {out}")
    return out
