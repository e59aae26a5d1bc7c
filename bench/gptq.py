"""What GPTQ changes in the shipped int4 text encoder, on extra-row plots it was not fitted to.

  .venv/bin/python -m bench.gptq [--work DIR] [--held_out 200] [--plots N]

Builds the encoder as export's int4 format does (the fine-tuned encoder, vocabulary pruned to the extra
rows' word pieces, 4-bit MatMuls and embedding tables) twice, with nearest rounding and with GPTQ on
export.gptq_calibration's plots (--plots, default export.GPTQ_PLOTS), and prints each file's embedding
cosine to fp32 on `--held_out` other extra plots (no dev or test plot, no label), and GPTQ's objective
summed over the 36 MatMuls, trace(D^T H D) for D = rounded - float weights with H from the calibration
plots (so in-sample), for rounding, GPTQ in row order and GPTQ in act order (the shipped one).
Reads the pipeline's cache (data, select, finetune); prints, asserts nothing.
"""

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from pipeline import config
from pipeline.export import gptq, packing, quantize, text_export
from pipeline.learn import text
from pipeline.runtime import packed_weights
from pipeline.stages import data, export, finetune, select


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=None, help="the pipeline's cache folder (default: config's)")
    p.add_argument("--held_out", type=int, default=200)
    p.add_argument("--plots", type=int, default=export.GPTQ_PLOTS, help="calibration plots")
    args = p.parse_args()
    cfg = config.load()
    if args.work:
        cfg["work"] = args.work
    torch.set_num_threads(cfg.threads)
    curated, tuned, selected = data.run(cfg), finetune.run(cfg), select.run(cfg)
    extra, _ = data.load_extra(curated)
    plots = extra.overview.iloc[select.load(selected)].tolist()
    calibration, held_out = export.gptq_calibration(cfg, plots, args.held_out, args.plots)
    model = text.TextEncoder(cfg.text_backbone, tuned / "encoder.safetensors").eval()
    parts = (model, None, text.tokenizer_json(cfg.text_backbone), cfg.text_backbone)
    model, tok, _, _ = export.int4_parts(cfg, parts, plots)
    fit = quantize.text_feeds([text.encode(tok, t, cfg.max_len) for t in calibration])
    check = quantize.text_feeds([text.encode(tok, t, cfg.max_len) for t in held_out])
    print(f"load {os.getloadavg()[0]:.2f}; {len(fit)} calibration plots, {len(check)} held-out extra plots")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        text_export.export_fp32(model, fp32, check[0]["input_ids"][0].tolist())
        ref = quantize.outputs(fp32, check)
        print("embedding cosine to fp32 on the held-out plots (lowest / mean):")
        for name, feeds in (("nearest rounding", ()), ("GPTQ, act order (shipped)", fit)):
            out = Path(tmp) / "int4.onnx"
            quantize.quantize_text(fp32, out, "int4", feeds)
            c = quantize.cosines(ref, quantize.outputs(out, check))
            print(f"  {name:28s} {c.min():.4f} / {c.mean():.4f}")
        plan = quantize.packing_plan(fp32, (), matmul=(4, quantize.INT4_MATMUL_BLOCK, "f16"))
        h = gptq.hessians(fp32, list(plan), fit)
        weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32)).graph.initializer if i.name in plan}
    errors = {"nearest rounding": 0.0, "GPTQ, row order": 0.0, "GPTQ, act order (shipped)": 0.0}
    for name, (bits, block, scale) in plan.items():
        w, hw = weights[name], h[name]
        for variant, (q, s) in (
            ("nearest rounding", packing.quantize(w, bits, block, scale)),
            ("GPTQ, row order", gptq.quantize(w, hw, bits, block, scale, act_order=False)),
            ("GPTQ, act order (shipped)", gptq.quantize(w, hw, bits, block, scale)),
        ):
            d = packed_weights.dequantize(q, s, block).astype(np.float64) - w
            errors[variant] += float(np.trace(d.T @ hw @ d))
    print(f"output error summed over {len(plan)} MatMuls, trace(D^T H D) on the calibration plots (in-sample):")
    for variant, e in errors.items():
        print(f"  {variant:28s} {e:10.2f}  ({e / errors['nearest rounding']:.2f} of rounding's)")


if __name__ == "__main__":
    main()
