"""Stage `figures`: every figure on the site, drawn from the other stages' cached outputs.

Nothing here trains. The output folder holds the figure files (png, svg, html, thumbs/) and
facts.json, the numbers the figures compute for the write-up; `publish` copies them to
assets/figures/ and _data/figures.json.

    dataset.py       genres by fold and test split, genres per movie, co-occurrence, balancing, sample table
    training.py      the encoder's fine-tuning on the extra rows, the heads' fold curves
    results.py       F1 with 95 % intervals beside the peers, per genre, by text length, PR, threshold, calibration
    scheme.py        the training-scheme diagram (SVG)
    architecture.py  the model diagram (SVG)
    topic_plots.py   BERTopic figures and the interactive map
    style.py         shared colours, matplotlib settings, SVG boxes sized from their text
"""

import json
from pathlib import Path

import numpy as np

from pipeline import cache
from pipeline.choose import thresholds
from pipeline.runtime import rules
from pipeline.stages import data, evaluate, export, finetune, lengths, topics, train
from pipeline.stages.figures import architecture, dataset, results, scheme, topic_plots, training

CODE = cache.source_digest(
    *sorted(str(p) for p in Path(__file__).parent.glob("*.py")), thresholds.__file__, rules.__file__
)
KEYS = ("seed", "sample_rows", "default_threshold", "topics_shown")


def run(cfg) -> cache.Output:
    curated, tuned, trained, evaluated = data.run(cfg), finetune.run(cfg), train.run(cfg), evaluate.run(cfg)
    exported, topic_out, measured = export.run(cfg), topics.run(cfg), lengths.run(cfg)
    upstream = dict(
        data=curated,
        finetune=tuned,
        train=trained,
        evaluate=evaluated,
        export=exported,
        topics=topic_out,
        lengths=measured,
    )
    parts = cache.stage_parts(CODE, cfg.subset(*KEYS), **upstream)

    def build(out: Path):
        movies, labels, y = data.load(curated)
        fold = movies.fold.to_numpy()
        metrics = evaluate.load(evaluated)
        with np.load(evaluated / "probs.npz") as f:
            probs = {k: f[k] for k in f.files}
        tuned_history = json.loads((tuned / "history.json").read_text())
        fusion_history = json.loads((trained / "history.json").read_text())
        curation = json.loads((curated / "curation.json").read_text())
        spec = json.loads((exported / "manifest.json").read_text())
        hidden = json.loads((trained / "fusion.json").read_text())["hidden"]
        summary = json.loads((topic_out / "topics.json").read_text())
        coords, assigned = np.load(topic_out / "coords.npy"), np.load(topic_out / "assigned.npy")

        facts = dataset.draw(movies, labels, y, cfg, out)
        facts |= training.draw(tuned_history, fusion_history, out)
        facts |= results.draw(metrics, probs, y, fold, cfg, lengths.load(measured), out)
        facts |= scheme.draw(curation, tuned_history, fusion_history, out)
        facts |= architecture.draw(spec, hidden, out)
        facts |= topic_plots.draw(summary, coords, assigned, labels, movies.title.to_numpy(), cfg.topics_shown, out)
        facts["files"] = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        (out / "facts.json").write_text(json.dumps(facts, indent=1))

    return cache.cached(cfg, "figures", parts, build)
