"""GenrePredictor: genre probabilities from a plot (and a poster) with the exported ONNX files.

The same files, tokenizer and rules as the in-browser demo: the text's windows and their pooling, the
decision rule and the sentence pattern come from the manifest's "rules" (pipeline/runtime/rules.py applies
them). A plot is read whole: its token ids are cut into windows of the encoder's max_len (the manifest's
stride apart), each window is embedded, and the windows are pooled into one prediction (rules.windows,
rules.pool), into which the plot's bag of words is blended (pipeline/runtime/bag.py, the manifest's
bag_of_words and rules.bag).

A model runs several inputs per call only when the manifest marks it "batchable" (its outputs do
not depend on what else is in the call: float, or int8 with fixed activation scales) and its graph
takes a batch. Windows (of any plots) are then grouped by token count, so a call pads little; the attention
mask keeps the padding out of every embedding. The float fusion head is always batched.

Every file is read once, checked against the manifest's size and sha256 (manifest.read_model_file), and
handed to onnxruntime as those bytes, packed weights rebuilt in memory: what runs is what was checked.
The poster encoder is loaded when the first poster needs it (`load_poster` loads it at once).
"""

import json
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from pipeline.runtime import bag, packed_weights, rules
from pipeline.runtime.manifest import CREATE, ModelsMissing, check_models, mode_thresholds, read_model_file

LOG_ERRORS_ONLY = 3  # onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
MAX_PADDING = 1.25  # a batch's longest plot has at most this many times the tokens of its shortest
# tokens per call, padding included: bounds a call's activations (its attention scores grow with rows x
# tokens^2); on 2 cores, 1 thread, a batchable MiniLM (fp16 or static int8) ran no faster per plot past
# 8 plots of 256 tokens (0.8-1.2x one at a time, machine under load), and slower at 32 of them (0.6-0.8x)
MAX_TOKENS = 2048


def session(
    graph: Path | bytes, threads: int = 1, external: tuple[str, np.ndarray] | None = None
) -> ort.InferenceSession:
    """A CPU session on `threads` threads that logs only errors (no "Removing initializer" warnings), from a
    graph's bytes and its float weights rebuilt in memory (packed_weights.external_data; onnxruntime copies
    them, so the caller need not keep them), or from a graph's path (its weights file beside it, if any)."""
    ort.set_default_logger_severity(LOG_ERRORS_ONLY)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = LOG_ERRORS_ONLY
    if not isinstance(graph, bytes):
        graph, external = Path(graph), packed_weights.in_memory(Path(graph))
    if external:
        opts.add_external_initializers_from_files_in_memory([external[0]], [external[1]], [len(external[1])])
    return ort.InferenceSession(
        graph if isinstance(graph, bytes) else str(graph), opts, providers=["CPUExecutionProvider"]
    )


def takes_batches(s: ort.InferenceSession) -> bool:
    """Whether every input's first dimension is free (not fixed at 1)."""
    return all(not isinstance(i.shape[0], int) or i.shape[0] > 1 for i in s.get_inputs())


def length_batches(lengths: list[int], size: int) -> list[np.ndarray]:
    """Row indices, one array per call: sorted by length, at most `size` rows and MAX_TOKENS padded
    tokens, the longest at most MAX_PADDING times the shortest (so padding is under a fifth of a call)."""
    order = np.argsort(lengths, kind="stable")
    out, start = [], 0
    for end in range(1, len(order) + 1):
        longest = lengths[order[end]] if end < len(order) else 0
        full = end - start == size or (end - start + 1) * longest > MAX_TOKENS
        if end == len(order) or full or longest > MAX_PADDING * lengths[order[start]]:
            out.append(order[start:end])
            start = end
    return out


def split(rows: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """`rows` cut into consecutive pieces of counts[0], counts[1], ... rows (each plot's windows)."""
    ends = np.cumsum(counts, dtype=np.int64)
    return [rows[end - n : end] for n, end in zip(counts, ends)]


def padded(encoded: list[list[int]]) -> dict[str, np.ndarray]:
    """The text encoder's feeds for several windows: ids padded with 0 to the longest, and the mask."""
    ids = np.zeros((len(encoded), max(map(len, encoded))), np.int64)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, : len(e)], mask[row, : len(e)] = e, 1
    return {"input_ids": ids, "attention_mask": mask}


def read_bag(models: Path, spec: dict) -> bag.Bag:
    """The bag of words of the checked folder `models`; files that do not fit the manifest (genres, sizes) are
    refused as models to rebuild (ModelsMissing)."""
    entry = spec["bag_of_words"]
    try:
        return bag.Bag(
            json.loads(read_model_file(models, spec, entry["file"])),
            read_model_file(models, spec, entry["weights_file"]),
            spec["rules"]["windows"]["max_chars"],
            spec["rules"]["bag"],
            spec["labels"],
        )
    except ValueError as e:
        raise ModelsMissing(f"{e}; {CREATE}") from None


class GenrePredictor:
    def __init__(self, models: Path, threads: int = 1, spec: dict | None = None):
        """The models at `models`; `spec`: their manifest, when check_models has just checked the folder."""
        self.models, self.threads = Path(models), threads
        self.spec = check_models(self.models) if spec is None else spec
        self.rules = self.spec["rules"]
        self.labels = self.spec["labels"]
        self.thresholds = mode_thresholds(self.spec)
        self.text_dim = self.spec["text_encoder"]["dim"]
        self.image_dim = self.spec["poster_encoder"]["dim"]
        self.text, self.head = self.model("text_encoder"), self.model("fusion_head")
        self._poster, self._poster_lock = None, threading.Lock()
        # the one output each call needs (the head's Grad-CAM Jacobian, the poster's feature maps are not computed)
        self.text_out, self.poster_out, self.head_out = (
            [self.spec[part]["output"]] for part in ("text_encoder", "poster_encoder", "fusion_head")
        )
        # several inputs per call only when the manifest says outputs stay the same and the graph takes a batch
        self.text_batchable = bool(self.spec["text_encoder"].get("batchable")) and takes_batches(self.text)
        self.tokenizer = Tokenizer.from_buffer(self.read(self.spec["text_encoder"]["tokenizer"]))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.bag = read_bag(self.models, self.spec)
        self.bag_weight = self.spec["bag_of_words"]["blend"]  # per input mode

    def read(self, name: str) -> bytes:
        """A file of the models folder, checked against the manifest (ModelsChanged when it differs)."""
        return read_model_file(self.models, self.spec, name)

    def model(self, part: str) -> ort.InferenceSession:
        """The session of a manifest part: its graph and (when it has one) its packed weights, as checked bytes."""
        entry = self.spec[part]
        # rebuilt first, so the packed bytes are gone before onnxruntime makes its copy
        external = packed_weights.external_data(self.read(entry["weights_file"])) if entry.get("weights_file") else None
        return session(self.read(entry["file"]), self.threads, external)

    def load_poster(self) -> ort.InferenceSession:
        """The poster encoder's session, loaded on first use (a plot-only run never pays for it)."""
        with self._poster_lock:
            if self._poster is None:
                poster = self.model("poster_encoder")
                self._poster_batchable = bool(self.spec["poster_encoder"].get("batchable")) and takes_batches(poster)
                self._poster = poster
        return self._poster

    @property
    def poster(self) -> ort.InferenceSession:
        return self._poster or self.load_poster()

    @property
    def poster_batchable(self) -> bool:
        """Whether posters go several per call: the manifest says batchable and the graph takes a batch."""
        self.load_poster()
        return self._poster_batchable

    def token_ids(self, plot: str) -> list[int]:
        """The plot's token ids, special tokens included: all of its first max_chars characters."""
        return self.tokenizer.encode(plot[: self.rules["windows"]["max_chars"]]).ids

    def text_tokens(self, text: str) -> int:
        """How many text tokens (special tokens not counted) `text` has, as it stands (no max_chars cut)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode(self, plot: str) -> list[list[int]]:
        """The windows the encoder reads, token ids each, by the manifest's rule (rules.windows): one for a plot
        of at most max_len tokens, else windows the manifest's stride apart that cover every token."""
        return rules.windows(self.token_ids(plot), self.rules["windows"])

    def sentences(self, plot: str) -> list[str]:
        """The plot split by the manifest's sentence pattern (the pieces join back into the plot)."""
        return rules.sentences(plot, self.rules["sentence_pattern"])

    def embed_windows(self, windows: list[list[int]], batch: int = 1) -> np.ndarray:
        """[len(windows), text dim]: each window's embedding; `batch` windows per call (of similar token counts)
        when the encoder is batchable, else one per call, unpadded."""
        out = np.zeros((len(windows), self.text_dim), np.float32)
        if not self.text_batchable or batch <= 1:
            for i, ids in enumerate(windows):
                out[i] = self.text.run(self.text_out, padded([ids]))[0][0]
            return out
        for rows in length_batches([len(ids) for ids in windows], batch):
            out[rows] = self.text.run(self.text_out, padded([windows[i] for i in rows]))[0]
        return out

    def embed_plot(self, plot: str) -> np.ndarray:
        """[windows, text dim]: one plot's window embeddings, one call per window, no padding
        ([1, text dim] for a plot of one window)."""
        return self.embed_windows(self.encode(plot))

    def embed_plots(self, plots: list[str], batch: int = 1) -> list[np.ndarray]:
        """Each plot's window embeddings [windows, text dim]; the windows of all the plots go `batch` per call
        (of similar token counts) when the encoder is batchable."""
        encoded = [self.encode(p) for p in plots]
        flat = self.embed_windows([ids for windows in encoded for ids in windows], batch)
        return split(flat, [len(windows) for windows in encoded])

    def embed_poster(self, pixels: np.ndarray) -> np.ndarray:
        """[1, image dim] from [h, w, 3] pixels (the graph resizes and normalises)."""
        x = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
        return self.poster.run(self.poster_out, {"image": x})[0]

    def embed_posters(self, images: list[np.ndarray]) -> np.ndarray:
        """[N, image dim]; one call per poster unless the encoder is batchable (then one call per
        group of equal-sized posters)."""
        out = np.zeros((len(images), self.image_dim), np.float32)
        if not self.poster_batchable:
            for i, pixels in enumerate(images):
                out[i] = self.embed_poster(pixels)[0]
            return out
        groups: dict[tuple, list[int]] = {}
        for i, pixels in enumerate(images):
            groups.setdefault(pixels.shape, []).append(i)
        for rows in groups.values():
            x = np.ascontiguousarray(np.stack([images[i] for i in rows]).transpose(0, 3, 1, 2), dtype=np.float32)
            out[rows] = self.poster.run(self.poster_out, {"image": x})[0]
        return out

    def combine_many(self, text: np.ndarray, image: np.ndarray, has_poster: np.ndarray, batch: int = 1) -> np.ndarray:
        """[N, G] probabilities; the fusion head is float, so `batch` rows per call change nothing but speed."""
        out = np.zeros((len(text), len(self.labels)), np.float32)
        step = max(1, batch)
        for s in range(0, len(text), step):
            feeds = {
                "text": np.ascontiguousarray(text[s : s + step], np.float32),
                "image": np.ascontiguousarray(image[s : s + step], np.float32),
                "has_poster": np.asarray(has_poster[s : s + step], np.float32).reshape(-1, 1),
            }
            out[s : s + step] = self.head.run(self.head_out, feeds)[0]
        return out

    def combine_windows(
        self, text: list[np.ndarray], image: np.ndarray, has_poster: np.ndarray, batch: int = 1, *, plots: list[str]
    ) -> np.ndarray:
        """[N, G] probabilities of N plots from each plot's window embeddings [windows, text dim], pooled by the
        manifest's rule: "mean_embedding" runs the head once on the mean of the windows' embeddings;
        "mean_probability" and "max_probability" run it on every window (with the plot's poster) and take the
        mean or the maximum of the probabilities. `image` [N, image dim], `has_poster` [N]: each plot's poster.
        Then each plot's bag of words (`plots`: the texts the windows were read from) is blended in, at its input
        mode's weight."""
        how = self.rules["windows"]["pool"]
        if not text:
            return np.zeros((0, len(self.labels)), np.float32)
        if how == "mean_embedding":
            probs = self.combine_many(
                np.stack([rules.pool(windows, how) for windows in text]), image, has_poster, batch
            )
        else:
            counts = [len(windows) for windows in text]
            owner = np.repeat(np.arange(len(text)), counts)  # each window's plot, for its poster
            per_window = self.combine_many(
                np.concatenate(text), np.asarray(image)[owner], np.asarray(has_poster)[owner], batch
            )
            probs = np.stack([rules.pool(p, how) for p in split(per_window, counts)])
        z = self.bag.logits(plots)
        has = np.asarray(has_poster).ravel() > 0
        out = np.asarray(probs, np.float32).copy()
        for mode, rows in (("plot", ~has), ("plot+poster", has)):  # one blend per input mode, at its weight
            if rows.any():
                out[rows] = bag.blend(out[rows], z[rows], self.bag_weight[mode], self.rules["bag"]["clip"])
        return out

    def combine(self, text_emb: np.ndarray, plot: str, poster_emb: np.ndarray | None = None) -> np.ndarray:
        """Genre probabilities [G] from one plot's window embeddings [windows, text dim] (embed_plot), pooled by
        the manifest's rule, the plot's bag of words and, when there is one, a poster embedding [1, image dim]."""
        has = poster_emb is not None
        image = poster_emb if has else np.zeros((1, self.image_dim), np.float32)
        return self.combine_windows([text_emb], image, np.array([float(has)]), plots=[plot])[0]

    def prediction(self, plot: str, pixels: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """(genre probabilities [G], how many windows of the plot were read)."""
        text = self.embed_plot(plot)
        return self.combine(text, plot, None if pixels is None else self.embed_poster(pixels)), len(text)

    def probabilities(self, plot: str, pixels: np.ndarray | None = None) -> np.ndarray:
        """Genre probabilities [G] of a plot, read whole, and a poster's pixels when there is one."""
        return self.prediction(plot, pixels)[0]

    def decide(self, probs: np.ndarray, mode: str) -> list[str]:
        """The predicted genres by the manifest's decision rule, with `mode`'s thresholds ("plot" or "plot+poster")."""
        chosen = rules.decide(probs, self.thresholds[mode], self.rules["decision"])
        return [g for g, yes in zip(self.labels, chosen) if yes]
