"""The model diagram (assets/figures/architecture.svg): sizes read from the export manifest and the
fusion head's saved dimensions, boxes sized from their text."""

from pathlib import Path

from pipeline.stages.figures.style import GREY, MUTED, Box, document, down, place_rows, wrap

MARGIN, GAP = 14, 26


# the fusion head's modes (pipeline/learn/fusion.py), in words
HEAD_NAMES = {
    "plot_head": "plot head (text only)",
    "fusion": "fusion head (text + poster)",
    "fusion_plot_only": "fusion head, poster input off",
}


def head_name(head: str) -> str:
    return HEAD_NAMES.get(head, head.replace("_", " "))


def svg(spec: dict, hidden: int) -> str:
    te, pe = spec["text_encoder"], spec["poster_encoder"]
    g = len(spec["labels"])
    size = pe["preprocessing"]["resize_in_model"]
    left = [
        Box("Plot text", ["WordPiece tokens,", f"read in {te['max_len']}-token windows"]),
        Box("Text encoder", ["fine-tuned MiniLM-L6", f"mean pool → {te['dim']}-d"]),
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
    heads = spec["fusion_head"]["heads"]  # input mode -> the head the graph runs for it
    bag = spec["bag_of_words"]
    blend = (
        f"bag of words ({bag['terms']} terms) mixed in: weight {bag['blend']['plot']} / {bag['blend']['plot+poster']}"
    )
    head = Box(
        "Head (one graph, switched by the poster)",
        [
            f"no poster → {head_name(heads['plot'])}",
            f"poster → {head_name(heads['plot+poster'])}",
            f"z = linear(text) → {g} logits; z + MLP(...)",
            f"{hidden} hidden, GELU → {g} sigmoids",
            *wrap(blend, inner),
        ],
    )
    decision = Box("Decision", wrap(threshold_text(spec), inner), fill="#e3f4ea", stroke="#2f9e66")
    cl, cr, cm = MARGIN + width_col / 2, width - MARGIN - width_col / 2, width / 2
    bottom = place_rows(
        [[(left[0], cl), (right[0], cr)], [(left[1], cl), (right[1], cr)], [(head, cm)], [(decision, cm)]],
        MARGIN,
        GAP,
    )
    body = [b.svg() for b in (*left, *right, head, decision)]
    body += [down(left[0], left[1]), down(right[0], right[1], dashed=True), down(head, decision)]
    for enc, dx in ((left[1], -40), (right[1], 40)):  # both embeddings into the head
        body.append(
            f'<line x1="{enc.cx:.1f}" y1="{enc.bottom:.1f}" x2="{cm + dx:.1f}" y2="{head.y - 2:.1f}" '
            f'stroke="{MUTED}" stroke-width="2" marker-end="url(#arrow)"/>'
        )
    return document(
        width,
        bottom + MARGIN,
        "Model architecture: text encoder, poster encoder, two heads switched by the poster, one threshold per mode",
        f"Plot text (read whole, in windows of {te['max_len']} tokens) goes through the fine-tuned MiniLM-L6 text encoder to a {te['dim']}-d "
        f"embedding; an optional poster goes through EfficientNet-Lite0 to a {pe['dim']}-d embedding. Without a "
        f"poster the {head_name(heads['plot'])} turns the text embedding into {g} genre probabilities; "
        f"with one, the {head_name(heads['plot+poster'])} also sees the poster. A {blend}, on the log-odds scale, "
        "without / with a poster. "
        f"{threshold_text(spec)}.",
        body,
    )


def threshold_text(spec: dict) -> str:
    """The decision as the manifest ships it: one threshold per input mode when every genre shares it."""
    parts = []
    for mode, label in (("plot", "plot only"), ("plot+poster", "plot + poster")):
        cuts = sorted(set(spec["thresholds"][mode]))
        parts.append(f"{cuts[0]:.2f} {label}" if len(cuts) == 1 else f"per-genre thresholds {label}")
    one = all(len(set(spec["thresholds"][m])) == 1 for m in ("plot", "plot+poster"))
    lead = "one threshold per input mode" if one else "thresholds per input mode"
    return f"{lead} ({', '.join(parts)}); a genre at or over it is predicted; none over → the top genre"


def draw(spec: dict, hidden: int, out: Path) -> dict:
    (out / "architecture.svg").write_text(svg(spec, hidden))
    return {}
