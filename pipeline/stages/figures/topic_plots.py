"""BERTopic's topics: top words, genres per topic, the 2-D map, and the interactive HTML map."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from pipeline.stages.figures.style import BLUE, placeholder, save


def topic_words(shown, path: Path):
    cols = 3
    rows = int(np.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(9, 2.1 * rows), squeeze=False)
    for ax, t in zip(axes.ravel(), shown):
        ax.set_title(f"{t['name']} ({t['size']})", fontsize=9)
        ax.barh(t["words"][:6][::-1], t["scores"][:6][::-1], color=BLUE)
        ax.set_xticks([])
        ax.tick_params(axis="y", labelsize=9)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    fig.suptitle("Largest topics and their top words (BERTopic, c-TF-IDF order)")
    fig.tight_layout()
    save(fig, path)


def topic_genres(shown, labels, path: Path):
    matrix = np.array([[t["genres"][g] for g in labels] for t in shown])
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(shown) + 2.2))
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(shown)), [t["name"] for t in shown], fontsize=9)
    ax.set_title("Share of each topic's movies that carry each genre")
    fig.colorbar(im, ax=ax, fraction=0.03)
    save(fig, path)


def topic_map(shown, coords, assigned, path: Path):
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(*coords[assigned == -1].T, s=3, color="#d0d4dc", label="no topic")
    cmap = plt.get_cmap("tab20")
    for k, t in enumerate(shown):
        ax.scatter(*coords[assigned == t["id"]].T, s=5, color=cmap(k % 20), label=t["name"])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("Movies by plot embedding (UMAP 2-D), coloured by topic")
    ax.legend(frameon=False, fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1, 0.5))
    save(fig, path)


def topic_html(summary, coords, assigned, titles, path: Path):
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


def draw(summary, coords, assigned, labels, titles, shown_count: int, out: Path) -> dict:
    shown = summary["topics"][:shown_count]
    if shown:
        topic_words(shown, out / "topics_top.png")
        topic_genres(shown, labels, out / "topic_genres.png")
    else:  # tiny data can leave every movie an outlier: say so instead of drawing nothing
        for name in ("topics_top.png", "topic_genres.png"):
            placeholder(out / name, "no topics found (every movie is an outlier)")
    topic_map(shown, coords, assigned, out / "topic_map.png")
    topic_html(summary, coords, assigned, titles, out / "topics_map.html")
    return {"topics_drawn": len(shown)}
