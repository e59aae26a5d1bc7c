"""The model diagram (assets/figures/architecture.svg): sizes read from the export manifest and the
fusion head's saved dimensions, boxes sized from their text."""

from pathlib import Path

from pipeline.stages.figures.style import GREY, MUTED, Box, document, down, place_rows, wrap

MARGIN, GAP = 14, 26


def svg(spec: dict, hidden: int) -> str:
    te, pe = spec["text_encoder"], spec["poster_encoder"]
    g = len(spec["labels"])
    size = pe["preprocessing"]["resize_in_model"]
    # the shipped encoder, as the manifest names it: the fine-tuned MiniLM or a student distilled from it
    student = str(te.get("backbone", "")).startswith("student")
    encoder = ["student of the fine-tuned", "MiniLM-L6"] if student else ["fine-tuned MiniLM-L6"]
    left = [
        Box("Plot text", [f"WordPiece, ≤ {te['max_len']} tokens"]),
        Box("Text encoder", [*encoder, f"mean pool → {te['dim']}-d"]),
    ]
    right = [
        Box("Poster (optional)", ["RGB pixels, any size"], fill="#eef1f6", stroke=GREY),
        Box(
            "Poster encoder", ["EfficientNet-Lite0", f"({size[0]}×{size[1]} resize inside)", f"pooled → {pe['dim']}-d"]
        ),
    ]
    width_col = max(b.w for b in left + right)
    for b in left + right:  # one width per column, so the two paths line up
        b.w = width_col
    width = 2 * MARGIN + 2 * width_col + GAP
    inner = width - 2 * MARGIN - 24
    fusion = Box(
        "Fusion head",
        [
            f"text → linear → {g} logits z",
            "z + MLP([z, poster·has, has])",
            "has: 1 with a poster, else 0",
            f"{hidden} hidden, GELU → {g} sigmoids",
        ],
    )
    decision = Box(
        "Decision",
        wrap(
            "per-genre thresholds of the input mode (plot, or plot\u00a0+\u00a0poster); none over → the top genre",
            inner,
        ),
        fill="#e3f4ea",
        stroke="#2f9e66",
    )
    cl, cr, cm = MARGIN + width_col / 2, width - MARGIN - width_col / 2, width / 2
    bottom = place_rows(
        [[(left[0], cl), (right[0], cr)], [(left[1], cl), (right[1], cr)], [(fusion, cm)], [(decision, cm)]],
        MARGIN,
        GAP,
    )
    body = [b.svg() for b in (*left, *right, fusion, decision)]
    body += [down(left[0], left[1]), down(right[0], right[1], dashed=True), down(fusion, decision)]
    for enc, dx in ((left[1], -40), (right[1], 40)):  # both embeddings into the head
        body.append(
            f'<line x1="{enc.cx:.1f}" y1="{enc.bottom:.1f}" x2="{cm + dx:.1f}" y2="{fusion.y - 2:.1f}" '
            f'stroke="{MUTED}" stroke-width="2" marker-end="url(#arrow)"/>'
        )
    return document(
        width,
        bottom + MARGIN,
        "Model architecture: text encoder, poster encoder, fusion head",
        f"Plot text (up to {te['max_len']} tokens) goes through the {' '.join(encoder)} text encoder to a {te['dim']}-d "
        f"embedding; an optional poster goes through EfficientNet-Lite0 to a {pe['dim']}-d embedding. The fusion head "
        f"turns the text embedding into {g} genre logits and corrects them with an MLP that also sees the poster "
        "embedding and a has-poster flag; per-genre thresholds of the input mode decide the genres.",
        body,
    )


def draw(spec: dict, hidden: int, out: Path) -> dict:
    (out / "architecture.svg").write_text(svg(spec, hidden))
    return {}
