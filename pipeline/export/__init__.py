"""From trained models to the shipped files: ONNX export, quantization, GPTQ, packed weights."""
