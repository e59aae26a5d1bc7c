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


def fit(docs: list[str], embeddings: np.ndarray, cfg):
    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from sklearn.feature_extraction.text import CountVectorizer
    from umap import UMAP

    model = BERTopic(
        umap_model=UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=cfg.seed),
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
        from umap import UMAP

        movies, labels, y = data.load(curated)
        frozen = embedded.plots_array()
        model, assigned = fit(movies.overview.tolist(), frozen, cfg)
        model.save(
            str(out / "bertopic"),
            serialization="safetensors",
            save_ctfidf=True,
            save_embedding_model=text.backbone_path(cfg.text_backbone),
        )
        coords = UMAP(
            n_neighbors=15, n_components=2, min_dist=0.1, metric="cosine", random_state=cfg.seed
        ).fit_transform(frozen)
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
