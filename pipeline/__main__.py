"""python -m pipeline STAGE [--key value ...]: one command line for every stage."""

import argparse
import sys
from pathlib import Path

from . import config

STAGES = {
    "data": "curate the movies and split them train/val/test",
    "embed": "frozen plot (MiniLM) and poster (EfficientNet-Lite0) embeddings",
    "train": "train the fusion head on the embeddings",
    "evaluate": "tune thresholds on val, score all models on test, write _data/metrics.json",
    "export": "export the ONNX models and manifest.json to assets/models/",
    "all": "every stage above, in order (cached stages are skipped)",
}


def parser() -> argparse.ArgumentParser:
    defaults = config.load()
    top = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = top.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, help_text in STAGES.items():
        config.add_overrides(sub.add_parser(name, help=help_text, description=help_text), defaults)
    p = sub.add_parser("predict", help="genres for a CSV of plots (and posters) with the ONNX models")
    p.add_argument(
        "input",
        type=Path,
        help="CSV with an 'overview' column; optional 'poster' (path relative to the CSV) and 'tmdb_id'",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="CSV to write: tmdb_id, one probability column per genre, genres"
    )
    p.add_argument(
        "--models",
        type=Path,
        default=config.ROOT / defaults["models"],
        help="folder with manifest.json and the ONNX files",
    )
    return top


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.stage == "predict":
        from .predict import predict_csv

        return predict_csv(args.input, args.out, args.models)
    cfg = config.from_args(args)
    from . import data, embed, evaluate, export, fusion

    stage = {"data": data.run, "embed": embed.run, "train": fusion.run, "evaluate": evaluate.run, "export": export.run}
    if args.stage == "all":
        export.run(cfg)  # pulls every upstream stage through the cache
    else:
        stage[args.stage](cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
