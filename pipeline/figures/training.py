"""How the epoch counts were chosen (training_curves.png, 2 × 2 panels): the cross-validated text
fine-tuning (held-out average precision, losses) and the fusion and poster-only heads' folds."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .style import GREY, INK, MUTED, save

FOLD_COLOURS = plt.get_cmap("tab10").colors


def column(history: list[dict], key: str) -> np.ndarray:
    return np.array([h[key] for h in history], dtype=float)


def epochs_label(prefix: str, n: int) -> str:
    return f"{prefix}: {n} epoch{'s' * (n != 1)}"


def finetune_ap(ax, history: dict):
    """Each fold model's micro average precision on its held-out fold, their mean, the chosen epoch."""
    for k, h in enumerate(history["folds"]):
        ax.plot(
            column(h, "epoch"),
            column(h, "held_micro_ap"),
            "o-",
            color=FOLD_COLOURS[k % 10],
            lw=1,
            ms=3,
            label=f"fold {k + 1} held out",
        )
    e = column(history["folds"][0], "epoch")
    ax.plot(
        e, np.mean([column(h, "held_micro_ap") for h in history["folds"]], 0), "o-", color=INK, lw=2.2, label="mean"
    )
    ax.axvline(
        history["chosen_epochs"], color=MUTED, ls=":", lw=1.5, label=epochs_label("chosen", history["chosen_epochs"])
    )
    ax.set_xticks(e)
    ax.set_ylabel("micro average precision")
    ax.set_title("Text fine-tuning: held-out fold")
    ax.legend(frameon=False, fontsize=8)


def finetune_loss(ax, history: dict):
    for k, h in enumerate(history["folds"]):
        c = FOLD_COLOURS[k % 10]
        ax.plot(column(h, "epoch"), column(h, "held_loss"), "o-", color=c, lw=1, ms=3)
        ax.plot(column(h, "epoch"), column(h, "train_loss"), "--", color=c, lw=1)
    final = history["final"]
    ax.plot(
        column(final, "epoch"), column(final, "train_loss"), "s-", color=GREY, lw=2, label="shipped, train (all dev)"
    )
    ax.plot([], [], "k-", lw=1, label="fold model, held-out fold")
    ax.plot([], [], "k--", lw=1, label="fold model, train")
    ax.axvline(history["chosen_epochs"], color=MUTED, ls=":", lw=1.5)
    ax.set_xticks(column(history["folds"][0], "epoch"))
    ax.set_ylabel("loss (BCE)")
    ax.set_title("Text fine-tuning: loss")
    ax.legend(frameon=False, fontsize=8)


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


def training_curves(tuned_history: dict, fusion_history: dict, path: Path):
    fig, axes = plt.subplots(2, 2, figsize=(9, 7), gridspec_kw={"wspace": 0.3, "hspace": 0.5})
    finetune_ap(axes[0, 0], tuned_history)
    finetune_loss(axes[0, 1], tuned_history)
    head_loss(axes[1, 0], fusion_history["head"], "Fusion head")
    head_loss(axes[1, 1], fusion_history["poster_head"], "Poster-only head")
    for ax in axes.ravel():
        ax.set_xlabel("epoch")
    # the heads' panels share one legend, under them
    fig.legend(
        *axes[1, 0].get_legend_handles_labels(),
        frameon=False,
        fontsize=9,
        ncol=4,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.02),
    )
    save(fig, path)


def draw(tuned_history: dict, fusion_history: dict, out: Path) -> dict:
    training_curves(tuned_history, fusion_history, out / "training_curves.png")
    chosen = tuned_history["chosen_epochs"]
    at_chosen = [h[chosen - 1]["held_micro_ap"] for h in tuned_history["folds"]]
    facts = {
        "finetune_epochs_max": len(tuned_history["folds"][0]),
        "finetune_epochs_chosen": chosen,
        "finetune_held_micro_ap": {"mean": float(np.mean(at_chosen)), "sd": float(np.std(at_chosen, ddof=1))},
        "fusion_epochs_chosen": fusion_history["head"]["epochs"],
        "fusion_fold_best_epochs": best_epochs(fusion_history["head"]["folds"]),
        "poster_head_epochs_chosen": fusion_history["poster_head"]["epochs"],
    }
    # the names the write-up used before cross-fitting: the epochs the shipped models ran
    return facts | {"finetune_epochs_run": chosen, "fusion_epochs_run": facts["fusion_epochs_chosen"]}
