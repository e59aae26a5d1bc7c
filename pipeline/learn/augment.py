"""Augmented views of a plot, for more distillation signal from the same plots (`student_views`)."""

import numpy as np

from pipeline.runtime import rules


def augment(plot: str, rng: np.random.Generator, other: str) -> str:
    """A new text near `plot`, for more distillation signal from few plots: sentences dropped,
    shuffled, or mixed with another plot's; or 15 % of the words dropped."""
    parts = rules.sentences(plot) or [plot]
    mode = rng.integers(4)
    if mode == 0 and len(parts) > 1:
        keep = [p for p in parts if rng.random() >= 0.35] or [parts[rng.integers(len(parts))]]
        return "".join(keep).strip()
    if mode == 1 and len(parts) > 1:
        return "".join(parts[i] for i in rng.permutation(len(parts))).strip()
    if mode == 2:
        theirs = rules.sentences(other) or [other]
        mine = parts[: max(1, len(parts) // 2 + rng.integers(0, 2))]
        return ("".join(mine).strip() + " " + "".join(theirs[: max(1, len(theirs) // 2)]).strip()).strip()
    words = plot.split()
    kept = [w for w in words if rng.random() >= 0.15] or words
    return " ".join(kept)
