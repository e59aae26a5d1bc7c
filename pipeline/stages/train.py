"""Stage `train`: the heads learned from the dev rows, on top of a text encoder that never saw them.

Every head adds a correction to the text encoder's genre logits z = text_head(e):
    logits = z + mlp([z, standardised e, standardised poster * has_poster, has_poster])
  plot_head    text only (no poster inputs)
  fusion       text + poster, with modality dropout (rows shown without their poster), so it
               serves both input modes
  poster_head  poster only (no text at all: the Grad-CAM gallery and the results table)
The encoder's outputs (e) on the main rows are honest features: `finetune` learned from the extra
rows only, never a label of the main rows. So only the heads need cross-fitting: for each dev fold a
head trains on the other folds (early stopping on a random share of them) and predicts the held-out
fold, in each input mode; those out-of-fold
probabilities are what every CV score and threshold is computed from. The shipped heads then train on
every dev row for the median epoch count the folds' early stopping chose, and predict the test rows.

The text heads can also learn from the dev movies' other texts (`long_text`: storylines, and
overview + storyline read in windows); which of `long_variants` they learn from, and how a long text is
read (the pooling, and the stride when window_strides lists several), is chosen by CV here
(pipeline/choose/windows.py), and every text is scored out of fold for the report (stage `lengths`).
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import cache
from pipeline.choose import windows
from pipeline.learn import fusion, text_classifier
from pipeline.learn.fusion import (
    HEADS,
    FusionHead,
    cross_fit,
)
from pipeline.runtime import bag, rules
from pipeline.stages import bag as bag_stage
from pipeline.stages import data, embed, finetune, long_text

# digested at import, so a stage's key names the code that actually runs
CODE = cache.source_digest(__file__, fusion.__file__, windows.__file__)


KEYS = ("seed", "fusion_hidden", "fusion_dropout", "modality_dropout", "fusion_epochs", "fusion_lr")


KEYS += ("fusion_weight_decay", "fusion_batch", "patience", "balance", "stop_frac")
LONG_KEYS = ("window_strides", "window_pools", "long_variants", "bag_blends")
# what each training variant adds to the overviews (config long_variants)
VARIANTS = {"overviews": (), "storylines": ("storyline",), "joined": ("storyline", "joined")}
CHOSEN_ON = "fusion"  # the head `choose` decides with: it reads both input modes


def run(cfg) -> cache.Output:
    curated, embedded, tuned = data.run(cfg), embed.run(cfg), finetune.run(cfg)
    long, bagged = long_text.run(cfg), bag_stage.run(cfg)
    parts = {
        "text": tuned.key,
        "posters": embedded.posters.key,
        "long_text": long.key,
        "bag": bagged.key,
        "config": cfg.subset(*KEYS, *LONG_KEYS),
        "code": CODE,
    }

    def build(out: Path):
        e, text_head = np.load(tuned / "embeddings.npy"), finetune.load_head(tuned)
        movies, labels, y = data.load(curated)
        image = embedded.posters_array()
        has_poster = (movies.poster != "").to_numpy(np.float32)[:, None]
        fold = movies.fold.to_numpy()
        rows = Rows(e, image, has_poster, y, fold)
        texts = long_text.LongTexts(long, labels)
        if len(texts.texts) == 0:
            texts = None  # no storylines nor long plots: overviews alone, read from their first window
        if texts is not None:
            rows.add_texts(texts, long_text.strides(cfg))
        probs, summary, chosen, fits = {}, {}, {"variant": "overviews", "probs": {}}, {}
        if texts is not None:
            chosen = choose(cfg, rows, texts, text_head)
            fits = chosen.pop("fits")
        for name in HEADS:
            uses_text, uses_image = HEADS[name]
            drop = cfg.modality_dropout if name == "fusion" else 0.0
            ee = rows.e if uses_text else np.zeros((len(rows.e), 0), np.float32)
            th = text_head if uses_text else nn.Linear(0, y.shape[1])
            if not uses_text:
                nn.init.zeros_(th.bias)  # poster only: no text, no text prior
            variant = chosen["variant"] if uses_text else "overviews"
            # the fusion head of each variant was cross-fitted by `choose`, with the same arguments
            done = fits if name == CHOSEN_ON else {}
            kw = {"use_image": uses_image, "drop": drop}
            got, summary[name], head = done.get(variant) or rows.cross_fit(cfg, th, ee, variant, **kw)
            probs.update({f"{name}/{m}": p[: len(y)] for m, p in got.items()})
            if texts is not None and uses_text:
                # the texts read the chosen way, and as the overviews-only head read them before: first window
                before = (
                    got
                    if variant == "overviews"
                    else (done.get("overviews") or rows.cross_fit(cfg, th, ee, "overviews", **kw))[0]
                )
                chosen["probs"].update(rows.read(got, chosen, f"{name}/"))
                chosen["probs"].update({f"first_window/{name}/{m}": p[rows.blocks["first"]] for m, p in before.items()})
                chosen["probs"].update({f"overviews_only/{name}/{m}": p[: len(y)] for m, p in before.items()})
            if texts is not None and uses_text:  # the bag of words blended in, by CV: the shipped probabilities
                blended = blend(cfg, rows, chosen, got, bag_stage.load_logits(bagged), f"{name}/")
                probs.update(blended.pop("overviews"))
                chosen["probs"].update(blended.pop("texts"))
                chosen.setdefault("blend", {}).update(blended)
            save(head, out, name)
        with torch.no_grad():  # the encoder alone: no head learned from the main rows
            z = text_head(torch.from_numpy(e)).numpy()
        probs["text_finetuned/plot"] = probs["text_finetuned/plot+poster"] = text_classifier.sigmoid(z)
        np.savez_compressed(out / "probs.npz", **probs)
        (out / "history.json").write_text(json.dumps(summary, indent=1))
        if texts is not None:
            np.savez_compressed(out / "long_probs.npz", **chosen.pop("probs"))
            (out / "windows.json").write_text(json.dumps(chosen, indent=1))

    return cache.cached(cfg, "train", parts, build)


class Rows:
    """The rows the heads learn from and score: the main rows' overviews first, then (add_texts) the long
    texts pooled by mean embedding at each stride, each of their windows at each stride, and their first
    windows. A text tied to a movie takes its poster, labels' fold (or the test split); one tied to none is
    scored like a test row, by the heads trained on every dev row."""

    def __init__(self, e, image, has_poster, y, fold):
        self.n = len(y)
        self.e, self.image, self.has_poster, self.y, self.fold = e, image, has_poster, y, fold
        self.movie, self.kind = np.arange(self.n), np.full(self.n, "overview", object)
        self.blocks = {"overview": slice(0, self.n)}

    def append(self, name, e, image, has_poster, y, fold, movie, kind):
        start = len(self.y)
        self.e, self.image = np.vstack([self.e, e]), np.vstack([self.image, image])
        self.has_poster, self.y = np.vstack([self.has_poster, has_poster]), np.vstack([self.y, y])
        self.fold, self.movie = np.concatenate([self.fold, fold]), np.concatenate([self.movie, movie])
        self.kind = np.concatenate([self.kind, kind])
        self.blocks[name] = slice(start, len(self.y))

    def add_texts(self, texts: long_text.LongTexts, strides: list[int]):
        t = texts.texts
        row = t.row.to_numpy()
        tied, at = row >= 0, np.maximum(row, 0)
        fold = np.where(tied, self.fold[at], -1)
        image = np.where(tied[:, None], self.image[at], 0).astype(np.float32)
        has = np.where(tied[:, None], self.has_poster[at], 0).astype(np.float32)
        movie = np.where(tied, row, self.n + np.arange(len(t)))
        kind = t.kind.to_numpy(object)
        per = (image, has, texts.y, fold, movie, kind)
        self.counts = {}
        for stride in strides:
            self.append(f"mean_{stride}", texts.mean_embeddings(stride), *per)
            windows = texts.window_rows(stride)
            self.counts[stride] = np.array([len(w) for w in windows])
            owner = np.repeat(np.arange(len(t)), self.counts[stride])
            self.append(f"windows_{stride}", texts.windows[np.concatenate(windows)], *(a[owner] for a in per))
        self.append("first", texts.windows[[w[0] for w in windows]], *per)
        self.strides, self.texts = strides, t

    def dev_overviews(self) -> np.ndarray:
        """Indices of the main rows in a dev fold."""
        return np.flatnonzero(self.fold[: self.n] >= 0)

    def dev_texts(self) -> np.ndarray:
        """Indices of the texts that are a dev movie's other texts (group "main"); never a test movie's, nor a
        text of another set (long plots of extra rows or of no row)."""
        return np.flatnonzero((self.fold[self.blocks["first"]] >= 0) & (self.texts.group.to_numpy() == "main"))

    def trainable(self, variant: str) -> np.ndarray:
        """The overviews, and the texts of the variant's kinds read the first stride's way (mean embedding)."""
        out = np.zeros(len(self.y), bool)
        out[self.blocks["overview"]] = True
        if VARIANTS[variant]:
            block = self.blocks[f"mean_{self.strides[0]}"]
            out[block] = np.isin(self.kind[block], VARIANTS[variant])
        return out

    def cross_fit(self, cfg, text_head, e, variant: str, **kw):
        return cross_fit(
            cfg, text_head, e, self.image, self.has_poster, self.y, self.fold, self.trainable(variant), self.movie, **kw
        )

    def reading(self, probs: dict, stride: int, pool: str) -> dict:
        """Per mode, the texts' probabilities read at `stride` and pooled by `pool`."""
        if pool == "mean_embedding":
            return {m: p[self.blocks[f"mean_{stride}"]] for m, p in probs.items()}
        return {
            m: windows.pooled(p[self.blocks[f"windows_{stride}"]], self.counts[stride], pool) for m, p in probs.items()
        }

    def read(self, probs: dict, chosen: dict, prefix: str) -> dict:
        return {f"{prefix}{m}": p for m, p in self.reading(probs, chosen["stride"], chosen["pool"]).items()}


def choose(cfg, rows: Rows, texts: long_text.LongTexts, text_head) -> dict:
    """The training variant, then the stride and pooling, by CV (pipeline/choose/windows.py), on the fusion
    head (the head of both input modes); every text head then learns the same way. Returns the choice and
    its evidence ("probs" is filled by the caller)."""
    y, n = rows.y, rows.n
    dev, dev_texts, y_texts = rows.dev_overviews(), rows.dev_texts(), texts.y
    variants = [v.strip() for v in str(cfg.long_variants).split(",")]
    pools = [p.strip() for p in str(cfg.window_pools).split(",")]
    stride0 = rows.strides[0]
    fits, evidence = {}, {}
    for variant in variants:
        fits[variant] = rows.cross_fit(cfg, text_head, rows.e, variant, use_image=True, drop=cfg.modality_dropout)
        got = fits[variant][0]
        cut = windows.cuts(got, y[:n], dev)
        read = rows.reading(got, stride0, "mean_embedding")
        evidence[variant] = {
            "cuts": cut,
            "overviews": windows.scores(got, y[:n], dev, cut),
            "texts": windows.scores(read, y_texts, dev_texts, cut),
        }
    variant = windows.choose_variant(evidence, variants[0])
    got, cut = fits[variant][0], evidence[variant]["cuts"]
    several = dev_texts[rows.counts[stride0][dev_texts] > 1]
    reading = {
        (stride, pool): windows.scores(rows.reading(got, stride, pool), y_texts, several, cut)
        for stride in rows.strides
        for pool in pools
    }
    windows_read = {stride: int(rows.counts[stride][several].sum()) for stride in rows.strides}
    stride, pool = windows.choose_reading(reading, windows_read)
    return {
        "variant": variant,
        "stride": int(stride),
        "pool": pool,
        "rule": rules.truncation(cfg.max_len, int(stride), pool),
        "evidence": {
            "variants": evidence,
            "reading": [{"stride": int(s), "pool": p, **v} for (s, p), v in reading.items()],
            "multi_window_dev_texts": len(several),
            "windows_read": {str(s): n for s, n in windows_read.items()},
            "reading_tie": windows.READING_TIE,
            "dev_texts": len(dev_texts),
        },
        "probs": {},
        "fits": fits,  # each variant's cross_fit result, for the caller's fusion head
    }


def blend(cfg, rows: Rows, chosen: dict, got: dict, logits: tuple, prefix: str) -> dict:
    """Per input mode, the bag's weight in the head's probabilities (windows.choose_blend, on the dev overviews
    and the dev movies' other texts read the chosen way) and those probabilities blended: {"overviews": {key:
    main rows}, "texts": {key: texts}, key: {"weight", "evidence"}} with key = prefix + mode."""
    n, z_over, z_texts = rows.n, *logits
    dev, dev_texts = rows.dev_overviews(), rows.dev_texts()
    y_texts = rows.y[rows.blocks["first"]]
    read = rows.reading(got, chosen["stride"], chosen["pool"])
    out = {"overviews": {}, "texts": {}}
    for mode in got:
        evidence = {}
        for a in sorted({0.0, *(float(w) for w in str(cfg.bag_blends).split(","))}):  # 0: no bag, the baseline
            over, texts = bag.blend(got[mode][:n], z_over, a), bag.blend(read[mode], z_texts, a)
            cut = windows.cuts({mode: over}, rows.y[:n], dev)
            evidence[a] = {
                "overviews": windows.scores({mode: over}, rows.y[:n], dev, cut),
                "texts": windows.scores({mode: texts}, y_texts, dev_texts, cut),
            }
        a = windows.choose_blend(evidence)
        out["overviews"][prefix + mode] = bag.blend(got[mode][:n], z_over, a)
        out["texts"][prefix + mode] = bag.blend(read[mode], z_texts, a)
        out[prefix + mode] = {"weight": a, "evidence": [{"weight": w, **e} for w, e in evidence.items()]}
    return out


def save(head: FusionHead, out: Path, name: str):
    torch.save(head.state_dict(), out / f"{name}.pt")
    dims = {
        "text_dim": head.text_head.in_features,
        "image_dim": head.image_mean.shape[0] if head.use_image else 0,
        "n_labels": head.text_head.out_features,
        "hidden": head.mlp[1].out_features,
        "use_image": head.use_image,
    }
    (out / f"{name}.json").write_text(json.dumps(dims))


def load(out: cache.Output, name: str = "fusion") -> FusionHead:
    """A trained head by name ('plot_head', 'fusion', 'poster_head')."""
    dims = json.loads((out / f"{name}.json").read_text())
    head = FusionHead(dims["text_dim"], dims["image_dim"], dims["n_labels"], dims["hidden"], 0.0, dims["use_image"])
    head.load_state_dict(torch.load(out / f"{name}.pt"))
    return head.eval()


def load_windows(out: cache.Output) -> dict | None:
    """The long-text choice (variant, stride, pool, rule, evidence), or None when there were no long texts."""
    path = out / "windows.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_long_probs(out: cache.Output) -> dict:
    """'head/mode' → the long texts' probabilities read the chosen way; 'first_window/head/mode' by the
    overviews-only head from the first window (the reading before); 'overviews_only/head/mode' that head's
    main-row probabilities."""
    with np.load(out / "long_probs.npz") as f:
        return {k: f[k] for k in f.files}


def load_probs(out: cache.Output) -> dict:
    """'model/mode' → probabilities for every main row (out of fold on dev rows, shipped heads on test)."""
    with np.load(out / "probs.npz") as f:
        return {k: f[k] for k in f.files}
