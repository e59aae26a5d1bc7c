"""How the fusion head ships in the smaller formats: which matrices become 8-bit (one float32 scale per
row), and the float head those stored weights give back, so CV judges the head the file holds."""

import numpy as np
import torch

from pipeline.export import packing
from pipeline.learn import fusion
from pipeline.runtime import packed_weights

HEAD_WEIGHTS = (8, "f32")  # the head's large matrices in the smaller formats: 8-bit, one float32 scale per row


MIN_HEAD_WEIGHT = 16384  # elements: smaller matrices stay float


PACKED_HEAD = {"int4"}  # the text formats whose head ships with HEAD_WEIGHTS matrices (export)


def rounded_in_head(name: str, dims) -> bool:
    """Whether the head file stores this matrix in HEAD_WEIGHTS: a large 2-D weight, never the encoder's
    genre head (text_finetuned reads it as it is)."""
    return len(dims) == 2 and int(np.prod(dims)) >= MIN_HEAD_WEIGHT and "text_head" not in name


def head_block(dims) -> tuple[int, int]:
    return (1, int(dims[1]))  # torch Linear weights [out, in] (Gemm's B): a scale per output unit


def head_plan(path) -> dict:
    """packing.pack's plan for an exported head: each matrix rounded_in_head, as `store_like` rounds it."""
    import onnx

    bits, scale = HEAD_WEIGHTS
    return {
        i.name: (bits, head_block(i.dims), scale)
        for i in onnx.load(str(path)).graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and rounded_in_head(i.name, i.dims)
    }


def head_quantization() -> str:
    bits, scale = HEAD_WEIGHTS
    return f"{bits}-bit matrices (a {scale} scale per row), dequantized to float at load, float compute"


def store_like(head: fusion.FusionHead) -> fusion.FusionHead:
    """The head with each matrix rounded_in_head as the shipped file rebuilds it (head_plan's rounding)."""
    bits, scale = HEAD_WEIGHTS
    with torch.no_grad():
        for name, p in head.named_parameters():
            if rounded_in_head(name, p.shape):
                block = head_block(p.shape)
                q, s = packing.quantize(p.numpy(), bits, block, scale)
                p.copy_(torch.from_numpy(packed_weights.dequantize(q, s, block)))
    return head
