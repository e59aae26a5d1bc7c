"""Test-split results: F1 with 95 % intervals beside the peers, per genre, by plot length, PR curves,
one global threshold, calibration, and which input carries the signal."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve

from pipeline.choose import thresholds
from pipeline.stages import evaluate
from pipeline.stages.figures.style import BLUE, GOLD, GREEN, GREY, INK, LIGHT_BLUE, MUTED, ORANGE, label_and_save, save

MODE_NAMES = {"plot": "plot only", "plot+poster": "plot + poster"}


def by_id(metrics) -> dict:
    return {m["id"]: m for m in metrics["models"]}


def shipped(metrics) -> dict[str, str]:
    """The shipped model of each input mode, as evaluate chose it (metrics' comparison)."""
    return {mode: c["shipped"] for mode, c in metrics["comparison"].items()}


def results_ci(metrics, path: Path):
    """Per input mode, the shipped model and its peers: test F1 with its bootstrap 95 % interval
    (filled) and the cross-validated dev mean ± sd (hollow)."""
    models, ours = by_id(metrics), shipped(metrics)
    modes = [(mode, [ours[mode], *peers]) for mode, peers in evaluate.PEERS.items() if mode in ours]
    fig, axes = plt.subplots(
        len(modes),
        2,
        figsize=(8, 1.4 + 0.55 * sum(len(r) for _, r in modes)),
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [len(r) for _, r in modes], "hspace": 0.35, "wspace": 0.08},
    )
    for (mode, rows), line in zip(modes, axes):
        best_peer = metrics["comparison"][mode]["best_peer"]
        colours = [BLUE if i == ours[mode] else ORANGE if i == best_peer else GREY for i in rows]
        y = np.arange(len(rows))
        for ax, avg in zip(line, ("micro", "macro")):
            for yi, mid, c in zip(y, rows, colours):
                m = models[mid]
                lo, hi = m[f"{avg}_f1_ci"]
                ax.errorbar(
                    m[f"{avg}_f1"],
                    yi - 0.12,
                    xerr=[[m[f"{avg}_f1"] - lo], [hi - m[f"{avg}_f1"]]],
                    fmt="o",
                    color=c,
                    ms=7,
                    capsize=3,
                    lw=1.8,
                )
                cv = m[f"cv_{avg}_f1"]
                ax.errorbar(cv["mean"], yi + 0.18, xerr=cv["sd"], fmt="D", color=c, mfc="white", ms=5, capsize=2, lw=1)
            ax.set_yticks(y, [] if avg == "macro" else [models[i]["name"] for i in rows])
            ax.set_ylim(len(rows) - 0.5, -0.5)
            ax.grid(axis="x", color="#e6e8ee")
            ax.set_title(f"{MODE_NAMES[mode]}: {avg} F1", fontsize=11, loc="left")
        for tick, c in zip(line[0].get_yticklabels(), colours):
            tick.set_color(c if c != GREY else INK)
            tick.set_fontweight("bold" if c == BLUE else "normal")
    for ax in axes[-1]:
        ax.set_xlabel("F1")
    handles = [
        plt.Line2D([], [], marker="o", color=INK, ls="-", label="test split, bootstrap 95 % interval"),
        plt.Line2D([], [], marker="D", color=INK, mfc="white", ls="-", label="dev folds, CV mean ± sd"),
        plt.Line2D([], [], marker="s", color=BLUE, ls="", label="shipped model"),
        plt.Line2D([], [], marker="s", color=ORANGE, ls="", label="best peer (chosen on dev)"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=2, frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.0))
    save(fig, path)


def ablation(metrics, path: Path):
    models, ours = by_id(metrics), shipped(metrics)
    rows = [("plot only", ours["plot"]), ("poster only", "poster_mlp"), ("plot + poster", ours["plot+poster"])]
    rows = [(name, m) for name, m in rows if m in models]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for dx, avg, colour in ((-0.2, "micro", BLUE), (0.2, "macro", ORANGE)):
        v = np.array([models[m][f"{avg}_f1"] for _, m in rows])
        ci = np.array([models[m][f"{avg}_f1_ci"] for _, m in rows]).T
        ax.bar(
            x + dx,
            v,
            0.4,
            color=colour,
            label=f"{avg} F1",
            yerr=[v - ci[0], ci[1] - v],
            capsize=3,
            error_kw={"lw": 1, "ecolor": INK},
        )
    ax.set_xticks(x, [r for r, _ in rows])
    ax.set_ylim(0, 1.2)  # room for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(frameon=False, loc="upper left", ncol=2)
    ax.set_title("Which input carries the signal (test, 95 % intervals)")
    save(fig, path)


def per_genre_f1(metrics, path: Path):
    models = by_id(metrics)
    peer, ours = metrics["comparison"]["plot+poster"]["best_peer"], shipped(metrics)
    best = ours["plot+poster"]
    shown = [(best, BLUE), (ours["plot"], LIGHT_BLUE), (peer, ORANGE)]
    labels = sorted(metrics["labels"], key=lambda g: -models[best]["per_genre"][g]["f1"])
    support = [models[best]["per_genre"][g]["support"] for g in labels]
    h = 0.27
    fig, ax = plt.subplots(figsize=(7, 0.42 * len(labels) + 1.4))
    for k, (mid, colour) in enumerate(shown):
        f1 = [models[mid]["per_genre"][g]["f1"] for g in labels]
        ax.barh(np.arange(len(labels)) + k * h, f1, h, color=colour, label=models[mid]["name"])
    ax.set_yticks(np.arange(len(labels)) + h, [f"{g} ({n})" for g, n in zip(labels, support)])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 on the test split (test movies with the genre in brackets)")
    ax.legend(frameon=False, fontsize=9, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=1)
    save(fig, path)


def pr_curves(probs, y, te, metrics, path: Path):
    ours = shipped(metrics)
    colours = iter([ORANGE, GREEN, GOLD, "#8c5bb5", GREY, "#c0504d", "#4bacc6"])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    peers = {i for ids in evaluate.PEERS.values() for i in ids}
    for m in metrics["models"]:  # the shipped models and the peers (not every candidate)
        if m["id"] not in peers and m["id"] not in ours.values():
            continue
        p, r, _ = precision_recall_curve(y[te].ravel(), probs[m["id"]][te].ravel())
        if m["id"] in ours.values():
            ls = "-" if m["id"] == ours["plot+poster"] else "--"
            ax.plot(r, p, color=BLUE, lw=2.2, ls=ls, label=m["name"], zorder=3)
        else:
            ax.plot(r, p, color=next(colours, GREY), lw=1.2, label=m["name"])
    ax.set_xlabel("recall (micro)")
    ax.set_ylabel("precision (micro)")
    ax.set_title("Precision-recall, test split")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.15), ncol=2)
    save(fig, path)


def threshold_curve(probs, y, dev, te, default: float, ours: dict, path: Path) -> dict:
    """Micro F1 against one global threshold: out-of-fold on dev rows (where choices are made) and on test."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    facts = {}
    for mode, ls in (("plot+poster", "-"), ("plot", "--")):
        p = probs[ours[mode]]
        on_dev, on_test = thresholds.micro_curve(p[dev], y[dev]), thresholds.micro_curve(p[te], y[te])
        ax.plot(thresholds.GRID, on_dev, ls, color=ORANGE, label=f"{MODE_NAMES[mode]}, dev out-of-fold")
        ax.plot(thresholds.GRID, on_test, ls, color=BLUE, label=f"{MODE_NAMES[mode]}, test")
        best = int(on_dev.argmax())
        ax.plot(thresholds.GRID[best], on_test[best], "o", color=BLUE, ms=5)
        facts[mode] = {
            "threshold": float(thresholds.GRID[best]),
            "dev_micro_f1": float(on_dev[best]),
            "test_micro_f1": float(on_test[best]),
        }
    ax.plot([], [], "o", color=BLUE, ms=5, label="at the threshold best on dev")
    ax.axvline(default, color=MUTED, ls=":", lw=1.2)
    ax.annotate(
        f"seed's {default}",
        (default, 0.02),
        xycoords=("data", "axes fraction"),
        xytext=(4, 0),
        textcoords="offset points",
        fontsize=8,
        color=MUTED,
    )
    label_and_save(
        fig, ax, path, "one global threshold", "micro F1", "Shipped model: micro F1 against one global threshold"
    )
    return facts


def calibration(p, t, bins=10) -> tuple[list, list, float]:
    """Per non-empty bin: mean predicted probability and observed frequency; and the expected calibration error."""
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    used = [b for b in range(bins) if (which == b).any()]
    mean_p = [p[which == b].mean() for b in used]
    freq = [t[which == b].mean() for b in used]
    ece = sum((which == b).sum() * abs(mp - f) for b, mp, f in zip(used, mean_p, freq)) / len(p)
    return mean_p, freq, float(ece)


def reliability(probs, y, te, ours: dict, path: Path) -> dict:
    fig, ax = plt.subplots(figsize=(4.6, 4.3))
    ax.plot([0, 1], [0, 1], ":", color=GREY, label="perfectly calibrated")
    ece = {}
    for mode, ls in (("plot+poster", "o-"), ("plot", "s--")):
        mean_p, freq, ece[mode] = calibration(probs[ours[mode]][te].ravel(), y[te].ravel())
        ax.plot(mean_p, freq, ls, color=BLUE, ms=4, label=f"{MODE_NAMES[mode]} (ECE {ece[mode]:.3f})")
    label_and_save(fig, ax, path, "predicted probability", "observed frequency", "Reliability, test split (all genres)")
    return ece


READER_NAMES = {  # stage `lengths`' readers, in words
    "windows": "shipped: the whole text, in windows",
    "first_window": "before: the first 256 tokens",
    "tfidf_lr": "TF-IDF + logistic regression",
}


def f1_by_length(lengths: dict, path: Path):
    """Out-of-fold F1 by text length band (dev movies' overviews, storylines, overview + storyline texts and
    matched long plots; plot only), the windows beside the first window and the TF-IDF peer."""
    bands = lengths["bands"]["dev"]
    readers = [r for r in READER_NAMES if r in bands[0]]
    ticks = [f"{b['band']} words\n({b[readers[0]]['texts']:,} texts)" for b in bands]
    x = np.arange(len(bands))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharey=True, gridspec_kw={"wspace": 0.08})
    width = 0.8 / len(readers)
    for ax, avg in zip(axes, ("micro", "macro")):
        for k, (reader, colour) in enumerate(zip(readers, (BLUE, LIGHT_BLUE, GREY))):
            offset = (k - (len(readers) - 1) / 2) * width
            ax.bar(x + offset, [b[reader][avg] for b in bands], width, color=colour, label=READER_NAMES[reader])
        ax.set_xticks(x, ticks, fontsize=9)
        ax.set_title(f"{avg} F1", loc="left")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("F1, out of fold (plot only)")
    fig.legend(
        *axes[0].get_legend_handles_labels(), frameon=False, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 0.98)
    )
    save(fig, path)


def draw(metrics, probs, y, fold, cfg, lengths: dict, out: Path) -> dict:
    dev, te = fold >= 0, fold < 0
    results_ci(metrics, out / "results_ci.png")
    ablation(metrics, out / "ablation.png")
    per_genre_f1(metrics, out / "per_genre_f1.png")
    pr_curves(probs, y, te, metrics, out / "pr_curves.png")
    ours = shipped(metrics)
    best_global = threshold_curve(probs, y, dev, te, cfg.default_threshold, ours, out / "threshold_curve.png")
    ece = reliability(probs, y, te, ours, out / "reliability.png")
    f1_by_length(lengths, out / "f1_by_length.png")
    return {
        "expected_calibration_error": ece["plot+poster"],
        "expected_calibration_error_plot_only": ece["plot"],
        "global_threshold_dev_best": best_global,
    }
