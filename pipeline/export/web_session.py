"""How the browser creates each shipped model's onnxruntime-web session: the graph optimization level,
decided here from the graph and written into the manifest ("web_optimization"); runtime.js only reads it.

"disabled" when no node can be computed from the stored weights alone (besides the copy-like Identity
and ConstantOfShape): the optimizer's passes then have nothing to fold and only cost time, run in wasm
the browser has not optimised yet on a visit (bench.browser, return visit, plot only, 2026-12-04, load
1.8, median of 3: 1.02 s at "disabled" against 1.27 s at "basic", warm 53 against 52 ms). Otherwise
"basic": it folds that work (the poster encoder's padding sizes computed from constants, the 8-bit
text format's embedding tables turned to float by a DequantizeLinear) once, at session creation, where
"disabled" would redo it at every run. Packed weights (packing.pack) are handed in as float and fold nothing.
"""

from collections import Counter
from pathlib import Path

from pipeline.export import packing

COPY_LIKE = {"Identity", "ConstantOfShape"}


def foldable_ops(path: Path) -> Counter:
    """Operator counts of the nodes whose inputs are all stored weights or outputs of such nodes."""
    graph = packing.load_graph(path).graph
    known = {i.name for i in graph.initializer}
    counts, pending = Counter(), list(graph.node)
    while True:
        ready = [n.op_type == "Constant" or all(x in known for x in n.input if x) for n in pending]
        if not any(ready):
            return counts
        for n in (n for n, r in zip(pending, ready) if r):
            known.update(n.output)
            if n.op_type != "Constant":
                counts[n.op_type] += 1
        pending = [n for n, r in zip(pending, ready) if not r]


def optimization_level(path: Path) -> str:
    return "basic" if set(foldable_ops(path)) - COPY_LIKE else "disabled"
