"""Keras ``predict`` on the same frames the edge's bench uses: how much onnxruntime gains over Keras.

Outside the edge package on purpose: ``steel_edge`` never imports TensorFlow, by any route
(``tests/test_edge_light.py``, the import-linter contracts). Run it with ``python benchmarks/onnx_vs_keras.py``.
The bundled ONNX model has no Keras twin on disk, so unless a trained model is named, ``bundled_keras_twin``
builds the bundled model's architecture (the ``architecture`` of its record ``models/default_seg.json``)
with random weights: speed does not depend on the weights.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from steel_edge.daemon import BUNDLED_MODEL
from steel_edge.data.imageio import decode_gray
from steel_train.config import ModelConfig
from steel_train.models import build_seg


def bundled_keras_twin(shape: tuple[int, int]) -> tuple[Any, str]:
    """The bundled model's architecture as a Keras model with random weights, and a description."""
    arch = json.loads(BUNDLED_MODEL.with_suffix(".json").read_text())["architecture"]
    model = build_seg(ModelConfig(input_height=shape[0], input_width=shape[1], **arch))
    return model, "build_seg(" + ", ".join(f"{k}={v}" for k, v in arch.items()) + "), random weights"


def bench_keras(keras_model: Path | None, files: Sequence[Path], shape: tuple[int, int], batch_size: int,
                threads: int) -> dict[str, Any]:
    """Keras ``predict`` on the same frames, batch size and thread count."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not a result
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if keras_model is not None:
        path = keras_model / "model.keras" if keras_model.is_dir() else keras_model
        model = keras.saving.load_model(path, compile=False)
        source = str(path)
    else:
        model, source = bundled_keras_twin(shape)
    x = np.stack([decode_gray(f.read_bytes(), f, expect=shape) for f in files]).astype(np.float32)[..., None]
    model.predict(x[:batch_size], batch_size=batch_size, verbose=0)  # warm-up: tracing and graph building
    t0 = time.perf_counter()
    model.predict(x, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - t0
    return {"model": source, "frames": len(files), "seconds": seconds, "fps": len(files) / seconds,
            "tensorflow": tf.__version__, "keras": keras.__version__}
