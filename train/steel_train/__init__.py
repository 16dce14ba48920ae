"""steel-train: data sets to tuned, evaluated Keras models.

TensorFlow is imported only where a model is built.
"""
