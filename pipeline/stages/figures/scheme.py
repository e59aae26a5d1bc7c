"""The training-scheme diagram (assets/figures/crossfit.svg): which rows each model trains on (the encoder the
extra rows only; the heads the dev folds, cross-fitted), and how out-of-fold predictions carry every choice
before the shipped heads train on all dev rows."""

from pathlib import Path

from pipeline.stages.figures.style import (
    CHAR_EM,
    GREEN,
    INK,
    MUTED,
    ORANGE,
    PAD,
    SUB,
    Box,
    arrow,
    document,
    down,
    place_rows,
    text,
    wrap,
)

MARGIN, GAP, ROW = 14, 22, 30  # ROW: height of a row of cells
CELLS = {
    "train": ("#dbe6fb", INK),
    "held out": (ORANGE, "#ffffff"),
    "unused": ("#f1f2f5", MUTED),
    "report": (GREEN, "#ffffff"),
    "scored": ("#e3f4ea", INK),
}
NB = "\u00a0"  # a no-break space keeps "plot + poster" on one line


class Grid:
    """Columns: the K dev folds, then the test split (set apart); one row of cells per model."""

    def __init__(self, fold_sizes: list[int], n_test: int, names: list[str], n_extra: int | None = None):
        self.lead = 1 if n_extra is not None else 0  # an "extra rows" column before the folds
        self.k = len(fold_sizes) + self.lead
        self.heads = [("extra", str(n_extra))] * self.lead
        self.heads += [(f"fold {i + 1}", str(n)) for i, n in enumerate(fold_sizes)] + [("test", str(n_test))]
        names = [*names, "movies"]  # the label of the header's second line
        words = [*CELLS, *names, *(s for h in self.heads for s in h)]
        self.label_w = max(len(s) for s in names) * SUB * CHAR_EM + PAD
        self.col_w = max(len(s) for s in words if s not in names) * SUB * CHAR_EM + PAD
        self.width = 2 * MARGIN + self.label_w + (self.k + 1) * self.col_w + 8 + 8 * self.lead

    def x(self, j: int) -> float:
        """Left edge of column j (the test column, and the extra column, sit 8 px apart)."""
        return MARGIN + self.label_w + j * self.col_w + (8 if j == self.k else 0) + (8 if self.lead and j > 0 else 0)

    def header(self, y: float) -> tuple[list[str], float]:
        out = [text(MARGIN, y + 2.4 * SUB, "movies", SUB, anchor="start", fill=MUTED)]
        for j, (a, b) in enumerate(self.heads):
            cx = self.x(j) + self.col_w / 2
            out += [text(cx, y + SUB, a, SUB, weight=600), text(cx, y + 2.4 * SUB, b, SUB, fill=MUTED)]
        return out, y + 2.4 * SUB + 8

    def row(self, y: float, name: str, cells: list[str], bold=False) -> list[str]:
        out = [text(MARGIN, y + ROW / 2 + SUB * 0.35, name, SUB, anchor="start", weight=600 if bold else 400)]
        for j, label in enumerate(cells):
            fill, ink = CELLS[label]
            out.append(
                f'<rect x="{self.x(j):.1f}" y="{y:.1f}" width="{self.col_w:.1f}" height="{ROW}" rx="4" fill="{fill}" '
                f'stroke="#ffffff" stroke-width="2"/>'
            )
            out.append(text(self.x(j) + self.col_w / 2, y + ROW / 2 + SUB * 0.35, label, SUB, fill=ink))
        return out


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def svg_extra(n_extra: int, fold_sizes: list[int], n_test: int, passes: int, head_epochs: int) -> str:
    """The scheme when the encoder fine-tunes on the extra rows only: no encoder folds; heads cross-fitted."""
    k = len(fold_sizes)
    names = ["text encoder"] + [f"heads, fold {i + 1}" for i in range(k)] + ["shipped heads"]
    grid = Grid(fold_sizes, n_test, names, n_extra)
    width = max(grid.width, 400)
    inner = width - 2 * MARGIN - 2 * PAD
    parts, y = grid.header(MARGIN)
    parts += grid.row(y, names[0], ["train"] + ["scored"] * (k + 1), bold=True)
    y += ROW
    note = wrap(
        f"fine-tuned {passes} pass{'es' * (passes != 1)} over the extra rows only: it never sees a main-set label, so its "
        "scores on every dev and test row are honest features",
        inner,
    )
    for line in note:
        y += SUB * 1.35
        parts.append(text(width / 2, y - 3, line, SUB, fill=MUTED))
    y += 8
    for i in range(k):  # each fold's heads learn from the other dev folds and score their own
        parts += grid.row(
            y, names[1 + i], ["unused"] + ["held out" if j == i else "train" for j in range(k)] + ["unused"]
        )
        y += ROW
    flow = [
        Box(
            "Out-of-fold probabilities",
            wrap(f"every dev row scored by heads that never saw its labels, plot only and plot{NB}+{NB}poster", inner),
        ),
        Box(
            "Choices, on dev folds only",
            [
                *wrap("which model ships per input mode, thresholds per genre and mode", inner),
                *wrap("peers train on the same rows (extra + dev), regularisation chosen inside each fold", inner),
            ],
            fill="#fdeede",
            stroke=ORANGE,
        ),
    ]
    bottom = place_rows([[(b, width / 2)] for b in flow], y + GAP, GAP)
    parts.append(arrow(width / 2, y + 2, width / 2, flow[0].y - 2))
    parts += [b.svg() for b in flow] + [down(a, b) for a, b in zip(flow, flow[1:])]
    y = bottom + GAP
    parts.append(arrow(width / 2, bottom, width / 2, y - 2))
    for line in wrap(f"heads retrained on every dev row ({plural(head_epochs, 'epoch')}, the folds' median)", inner):
        y += SUB * 1.35
        parts.append(text(width / 2, y - 3, line, SUB, fill=MUTED))
    y += 6
    parts += grid.row(y, names[-1], ["unused"] + ["train"] * k + ["report"], bold=True)
    y += ROW
    report = Box(
        "Test report",
        wrap(
            "F1 with bootstrap 95 % intervals, for the report: read after the choices (the decision log lists every reading)",
            inner,
        ),
        fill="#e3f4ea",
        stroke=GREEN,
    )
    bottom = place_rows([[(report, width / 2)]], y + GAP, GAP)
    test_cx = grid.x(grid.k) + grid.col_w / 2
    parts.append(arrow(test_cx, y, test_cx, report.y - 2))
    parts.append(report.svg())
    return document(
        width,
        bottom + MARGIN,
        "Training scheme: extra rows, dev folds, out-of-fold predictions, shipped heads, test report",
        f"The text encoder fine-tunes on {n_extra} extra rows only and scores every dev and test row. The "
        f"{sum(fold_sizes)} dev rows are split into {k} folds; each fold's heads train on the other folds and score "
        f"their own, so every dev row gets probabilities from heads that never saw its labels. Choices are made on "
        f"those; the shipped heads then train on every dev row, and only they are scored on the {n_test} test rows.",
        parts,
    )


def draw(curation: dict, tuned_history: dict, fusion_history: dict, out: Path) -> dict:
    n_extra = tuned_history.get("extra_rows") or (curation.get("extra") or {}).get("rows", 0)
    picture = svg_extra(
        n_extra,
        curation["folds"],
        curation["split"]["test"],
        len(tuned_history["epochs"]),
        fusion_history["fusion"]["epochs"],
    )
    (out / "crossfit.svg").write_text(picture)
    return {}
