"""steel-export: Keras model to an ONNX file that carries its own contract."""
