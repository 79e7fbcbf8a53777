"""Runtimes other than ONNX Runtime that run explain models (ONNX Runtime's sessions are :mod:`onnxcam.runtime`)."""
