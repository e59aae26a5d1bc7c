"""Training curves (training_curves.png, 2 × 2 panels): the text encoder fine-tuned on the extra rows (loss,
and the dev rows' scores it reports), and each cross-fitted head's folds (the shipped head runs their median)."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from pipeline.stages.figures.style import GREY, INK, MUTED, save

FOLD_COLOURS = plt.get_cmap("tab10").colors


def column(history: list[dict], key: str) -> np.ndarray:
    return np.array([h[key] for h in history], dtype=float)


def epochs_label(prefix: str, n: int) -> str:
    return f"{prefix}: {n} epoch{'s' * (n != 1)}"


def best_epochs(folds: list[list[dict]]) -> list[int]:
    return [int(np.argmin(column(h, "stop_loss"))) + 1 for h in folds]


def head_loss(ax, history: dict, title: str):
    """Per dev fold, a head's training and early-stopping loss; the shipped head runs the median of
    the folds' best epochs on every dev row."""
    for k, (h, best) in enumerate(zip(history["folds"], best_epochs(history["folds"]))):
        c, stop = FOLD_COLOURS[k % 10], column(h, "stop_loss")
        ax.plot(column(h, "epoch"), stop, "-", color=c, lw=1.2, label=f"fold {k + 1}")
        ax.plot(column(h, "epoch"), column(h, "train_loss"), "--", color=c, lw=1)
        ax.plot(best, stop[best - 1], "o", color=c, ms=5)
    values = np.concatenate([column(h, key) for h in history["folds"] for key in ("stop_loss", "train_loss")])
    if values.max() / max(values.min(), 1e-9) > 10:
        ax.set_yscale("log")
    ax.axvline(history["epochs"], color=MUTED, ls=":", lw=1.5, label="epochs the shipped head runs")
    ax.plot([], [], "k-", lw=1.2, label="early-stopping rows")
    ax.plot([], [], "k--", lw=1, label="training rows")
    ax.plot([], [], "o", color=MUTED, label="fold's best epoch")
    ax.set_ylabel("loss (BCE)")
    ax.set_title(f"{title} ({epochs_label('shipped', history['epochs'])})", fontsize=11)


def finetune_extra(ax, history: dict):
    """The encoder fine-tuned on the extra rows only: training loss per pass, and the dev rows' scores
    after each pass (reported, never used for a choice) when the stage recorded them."""
    rows = history["epochs"]
    e = column(rows, "epoch")
    ax.plot(
        e,
        column(rows, "train_loss"),
        "s-",
        color=GREY,
        lw=2,
        label=f"train loss ({history.get('extra_rows', '?')} extra rows)",
    )
    ax.set_ylabel("loss (BCE)")
    ax.set_xticks(e)
    if rows and "held_micro_ap" in rows[0]:
        twin = ax.twinx()
        twin.plot(e, column(rows, "held_micro_ap"), "o-", color=INK, lw=1.5, label="dev rows: micro AP (reported only)")
        twin.set_ylabel("micro AP")
        twin.spines["right"].set_visible(True)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, frameon=False, fontsize=8, loc="center right")
    else:
        ax.legend(frameon=False, fontsize=8)
    ax.set_title("Text encoder: fine-tuned on the extra rows")


HEAD_TITLES = {
    "head": "Fusion head",
    "fusion": "Fusion head",
    "plot_head": "Plot head",
    "poster_head": "Poster-only head",
}


def heads(fusion_history: dict) -> list[str]:
    """The cross-fitted heads the train stage recorded, in a fixed order."""
    order = ["plot_head", "fusion", "poster_head"]
    return [h for h in order if h in fusion_history] + [h for h in fusion_history if h not in order]


def training_curves(tuned_history: dict, fusion_history: dict, path: Path):
    # wspace: room for the encoder panel's second axis
    fig, axes = plt.subplots(2, 2, figsize=(9, 7), gridspec_kw={"wspace": 0.55, "hspace": 0.5})
    names = heads(fusion_history)
    finetune_extra(axes[0, 0], tuned_history)  # the encoder, fine-tuned once on the extra rows
    panels = [axes[0, 1], axes[1, 0], axes[1, 1]]
    for ax, name in zip(panels, names):
        head_loss(ax, fusion_history[name], HEAD_TITLES.get(name, name))
    for ax in panels[len(names) :]:
        ax.axis("off")
    for ax in axes.ravel():
        ax.set_xlabel("epoch")
    # the heads' panels share one legend, under them
    fig.legend(
        *panels[0].get_legend_handles_labels(),
        frameon=False,
        fontsize=9,
        ncol=4,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.02),
    )
    save(fig, path)


def draw(tuned_history: dict, fusion_history: dict, out: Path) -> dict:
    training_curves(tuned_history, fusion_history, out / "training_curves.png")
    fusion = fusion_history["fusion"]
    rows = tuned_history["epochs"]
    facts = {
        "fusion_epochs_chosen": fusion["epochs"],
        "fusion_fold_best_epochs": best_epochs(fusion["folds"]),
        "head_epochs": {name: fusion_history[name]["epochs"] for name in heads(fusion_history)},
        "finetune_epochs_run": len(rows),
        "finetune_extra_rows": tuned_history.get("extra_rows"),
    }
    if rows and "held_micro_ap" in rows[-1]:
        facts["finetune_dev_micro_ap"] = rows[-1]["held_micro_ap"]
    return facts | {"fusion_epochs_run": facts["fusion_epochs_chosen"]}
