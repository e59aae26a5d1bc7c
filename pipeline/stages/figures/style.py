"""Shared look of every figure: matplotlib settings and colours, and a small SVG toolkit whose boxes
are sized from their text, so no label overflows its box at any scale.
"""

import textwrap
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.bbox": "tight",
        "font.size": 11,  # figures shrink on phones: keep the text a size larger than matplotlib's default
        "axes.titlesize": 12,
        "legend.fontsize": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)
BLUE, LIGHT_BLUE, ORANGE, GREEN, GREY, GOLD = "#2454a6", "#7d9bd6", "#e07b39", "#2f9e66", "#9aa3b2", "#c9a227"
INK, MUTED = "#1d2230", "#5b6475"


def save(fig, path: Path):
    fig.savefig(path, metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(fig)


def label_and_save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str):
    """Axis labels, title and a frameless legend, then save: the finish most line charts share."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    save(fig, path)


def placeholder(path: Path, message: str):
    """A figure that says why there is nothing to draw (tiny data), rather than a missing file."""
    fig, ax = plt.subplots(figsize=(5, 1.2))
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.axis("off")
    save(fig, path)


# --- SVG -------------------------------------------------------------------------------------------
# Text width is estimated, not measured: CHAR_EM × font size per character. That is wider than the average
# glyph of most sans-serif UI fonts (about 0.5–0.55 em) and close to DejaVu Sans, the widest common one
# (up to 1.06 × the estimate on these diagrams' lines, measured in Chromium); the PAD on each side of a box
# absorbs the rest. tests/test_figures.py checks both the estimate and Chromium's rendering.
CHAR_EM = 0.6
TITLE, SUB = 14, 12  # font sizes (px) of box titles and their lines
PAD = 10  # inner padding of a box
LINE = 1.35  # line height, in font sizes
PHONE = 350  # CSS px a figure gets on a 390 px phone (page padding aside)
SCALE = 1.25  # natural size / viewBox size: text a little larger on desktop; phones scale it down to PHONE
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif"


def text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_EM


def wrap(text: str, width: float, size: float = SUB) -> list[str]:
    """Lines of `text` that each fit `width` px at font `size`."""
    return textwrap.wrap(text, max(8, int(width / (size * CHAR_EM)))) or [""]


class Box:
    """A rounded box with a bold title and lines under it; its size follows from its text."""

    def __init__(self, title: str, lines=(), fill="#dbe6fb", stroke=BLUE, min_width=0.0):
        self.title, self.lines, self.fill, self.stroke = title, list(lines), fill, stroke
        widths = [text_width(title, TITLE)] + [text_width(s, SUB) for s in self.lines]
        self.w = max(max(widths) + 2 * PAD, min_width)
        self.h = 2 * PAD + TITLE * LINE + len(self.lines) * SUB * LINE
        self.x = self.y = 0.0

    def at(self, x: float, y: float) -> "Box":
        self.x, self.y = x, y
        return self

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h

    def svg(self) -> str:
        out = [
            f'<rect x="{self.x:.1f}" y="{self.y:.1f}" width="{self.w:.1f}" height="{self.h:.1f}" rx="8" '
            f'fill="{self.fill}" stroke="{self.stroke}"/>',
            text(self.cx, self.y + PAD + TITLE, self.title, TITLE, weight=600),
        ]
        for i, s in enumerate(self.lines):
            out.append(text(self.cx, self.y + PAD + TITLE * LINE + (i + 1) * SUB * LINE - 3, s, SUB))
        return "\n".join(out)


def text(x, y, s, size, anchor="middle", weight=400, fill=INK) -> str:
    bold = f' font-weight="{weight}"' if weight != 400 else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}"{bold} fill="{fill}">'
        f"{escape(s)}</text>"
    )


def arrow(x1, y1, x2, y2, dashed=False) -> str:
    dash = ' stroke-dasharray="5 4"' if dashed else ""
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{MUTED}" stroke-width="2"{dash} '
        'marker-end="url(#arrow)"/>'
    )


def document(width: float, height: float, title: str, description: str, body: list[str]) -> str:
    """A standalone SVG. Its width and height attributes are its natural size in CSS px (SCALE × the
    viewBox): shown as an <img> with max-width 100 % it never grows past that on desktop and scales
    down, text and all, on phones."""
    w, h = round(width), round(height)
    return (
        "\n".join(
            [
                f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{round(w * SCALE)}" height="{round(h * SCALE)}" '
                f'role="img" aria-labelledby="t d" font-family="{FONT}">',
                f'<title id="t">{escape(title)}</title>',
                f'<desc id="d">{escape(description)}</desc>',
                '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
                f'orient="auto"><path d="M0 0L10 5L0 10z" fill="{MUTED}"/></marker></defs>',
                f'<rect width="{w}" height="{h}" fill="#ffffff"/>',
                *body,
                "</svg>",
            ]
        )
        + "\n"
    )


def place_rows(rows: list[list[tuple["Box", float]]], top: float, gap: float) -> float:
    """Lay out rows of (box, centre x), each row as tall as its tallest box; returns the bottom y."""
    y = top
    for row in rows:
        h = max(b.h for b, _ in row)
        for b, cx in row:
            b.at(cx - b.w / 2, y + (h - b.h) / 2)
        y += h + gap
    return y - gap


def down(a: "Box", b: "Box", dashed=False) -> str:
    """An arrow from the bottom of box a to the top of box b."""
    return arrow(a.cx, a.bottom, b.cx, b.y - 2, dashed)
