"""Exporting a run for fast serving: ONNX graphs and their int8 quantization."""
