"""Stage `topics`: BERTopic on the plots, reusing the frozen MiniLM embeddings already computed.

UMAP is seeded, so the same data gives the same topics. Topic names are made from each topic's
top words (never typed by hand). The fitted model is saved with safetensors serialization.
"""

import json
from pathlib import Path

import numpy as np

from pipeline import cache
from pipeline.learn import text
from pipeline.stages import data, embed

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__)


NEIGHBOURS = 15  # UMAP's n_neighbors, both maps


def cosine_neighbours(x: np.ndarray, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Every row's k nearest rows by cosine distance, itself first, and their distances: the exact neighbours
    UMAP finds itself for under 4,096 rows, but by one matrix product. UMAP's own way called its numba
    distance once per pair through scikit-learn (7 million Python calls, 33 s a map on 3,781 plots)."""
    from sklearn.metrics.pairwise import cosine_distances

    d = cosine_distances(x)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int32), np.take_along_axis(d, idx, axis=1).astype(np.float32)


def seeded_umap(neighbours: tuple, components: int, min_dist: float, seed: int):
    """A seeded UMAP on its own copy of the given neighbours (cosine_neighbours): UMAP edits them in place."""
    from umap import UMAP

    return UMAP(
        n_neighbors=NEIGHBOURS,
        n_components=components,
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,
        precomputed_knn=tuple(a.copy() for a in neighbours),
    )


def fit(docs: list[str], embeddings: np.ndarray, cfg, neighbours: tuple):
    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from sklearn.feature_extraction.text import CountVectorizer

    model = BERTopic(
        umap_model=seeded_umap(neighbours, 5, 0.0, cfg.seed),
        hdbscan_model=HDBSCAN(min_cluster_size=cfg.topic_min_size, metric="euclidean", prediction_data=True),
        vectorizer_model=CountVectorizer(stop_words="english"),  # one document per topic: no min_df
        top_n_words=10,
    )
    topics, _ = model.fit_transform(docs, embeddings)
    return model, np.array(topics)


def topic_name(words: list[str]) -> str:
    return " · ".join(words[:3])


def run(cfg) -> cache.Output:
    curated, embedded = data.run(cfg), embed.run(cfg)
    parts = cache.stage_parts(CODE, cfg.subset("seed", "topic_min_size"), data=curated, plots=embedded.plots)

    def build(out: Path):
        movies, labels, y = data.load(curated)
        frozen = embedded.plots_array()
        neighbours = cosine_neighbours(frozen)
        model, assigned = fit(movies.overview.tolist(), frozen, cfg, neighbours)
        model.save(
            str(out / "bertopic"),
            serialization="safetensors",
            save_ctfidf=True,
            save_embedding_model=text.backbone_path(cfg.text_backbone),
        )
        coords = seeded_umap(neighbours, 2, 0.1, cfg.seed).fit_transform(frozen)
        np.save(out / "coords.npy", coords.astype(np.float32))
        np.save(out / "assigned.npy", assigned)
        found = []
        for t in sorted(set(assigned) - {-1}):
            rows = assigned == t
            pairs = model.get_topic(t)
            words = [w for w, _ in pairs]
            share = y[rows].mean(0)
            found.append(
                {
                    "id": int(t),
                    "name": topic_name(words),
                    "size": int(rows.sum()),
                    "words": words,
                    "scores": [float(v) for _, v in pairs],
                    "genres": {g: float(s) for g, s in zip(labels, share)},
                    "top_genres": [labels[i] for i in np.argsort(-share)[:3]],
                }
            )
        found.sort(key=lambda t: -t["size"])
        summary = {
            "topics": found,
            "n_topics": len(found),
            "outliers": int((assigned == -1).sum()),
            "movies": len(assigned),
        }
        (out / "topics.json").write_text(json.dumps(summary, indent=1))

    return cache.cached(cfg, "topics", parts, build)
