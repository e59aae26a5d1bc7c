"""python -m pipeline STAGE [--key value ...]: one command line for every stage."""

import argparse
import importlib
import sys

from pipeline import config

STAGES = {
    "data": "curate the movies (and the extra rows), set the test split aside, split the rest into dev folds",
    "embed": "frozen plot embeddings (MiniLM, main and extra rows) and poster embeddings (EfficientNet-Lite0)",
    "select": "choose which extra rows (languages, sources) train the encoder and the peers, by CV",
    "finetune": "fine-tune the text transformer on the chosen extra rows (the seed's recipe)",
    "long_text": "cut storylines, overview + storyline texts and long plots into windows; embed each window once",
    "bag": "a TF-IDF + logistic regression over whole texts (cross-fitted), blended into the heads' probabilities",
    "train": "cross-fit the heads (plot, fusion, poster) on the dev rows; choose how long texts are read, by CV",
    "evaluate": "tune thresholds on out-of-fold rows, choose by CV, score every model on test for the report",
    "export": "export the ONNX models and manifest.json (text encoder in the format CV chose, poster encoder, heads, Grad-CAM)",
    "lengths": "F1 by text length (windows, first window, TF-IDF peer), long plots, the shipped files on held-out long texts",
    "topics": "BERTopic on the plots, reusing the frozen plot embeddings",
    "explain": "Grad-CAM heatmaps of the poster model on a gallery of test posters",
    "figures": "draw every site figure from the saved outputs (no training)",
    "publish": "write what the site shows (_data/, assets/models/, assets/figures/) from the stages' outputs",
    "all": "every stage above, in order (cached stages are skipped)",
}


# commands that are not stages: module and help. Only the command being run imports its module, so
# `predict` and `serve` load the torch-free runtime alone (not flask, requests or the stages).
COMMANDS = {
    "predict": ("pipeline.runtime.predict", "genres for a CSV of plots (and posters) with the ONNX models"),
    "fetch": ("pipeline.fetch", "build a data folder from IMDb title.basics + the TMDB API (key in TMDB_API_KEY)"),
    "serve": ("pipeline.runtime.serve", "local HTTP API over the ONNX models: POST /predict, GET /healthz"),
}


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every stage and command; a command's own flags only for `command` (None: all, for --help)."""
    defaults = config.load()
    top = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = top.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, help_text in STAGES.items():
        config.add_overrides(sub.add_parser(name, help=help_text, description=help_text), defaults)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command in (None, name):
            importlib.import_module(module).add_arguments(p)
    return top


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = parser(command).parse_args(argv)
    if args.stage in COMMANDS:
        return importlib.import_module(COMMANDS[args.stage][0]).main(args)
    cfg = config.from_args(args)
    from pipeline.stages import (
        bag,
        data,
        embed,
        evaluate,
        explain,
        export,
        figures,
        finetune,
        lengths,
        long_text,
        publish,
        select,
        topics,
        train,
    )

    stage = {
        "data": data.run,
        "embed": embed.run,
        "select": select.run,
        "finetune": finetune.run,
        "long_text": long_text.run,
        "bag": bag.run,
        "train": train.run,
        "evaluate": evaluate.run,
        "export": export.run,
        "lengths": lengths.run,
        "topics": topics.run,
        "explain": explain.run,
        "figures": figures.run,
        "publish": publish.run,
        "all": publish.run,  # pulls every other stage through the cache
    }
    stage[args.stage](cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
