"""``steel-edge bench`` end to end on a few frames: every figure is present and sane.

No speed thresholds: CI machines are shared and noisy, and a benchmark that fails on a slow day teaches
nobody anything. What is checked is that each measurement was made on all frames and is self-consistent.
"""

from __future__ import annotations

import json

import pytest

from steel_edge.cli.bench import bench_main


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_json_has_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--frames", "16", "--json", "--repeat", "1", "--clean-share", "0.9"]) == 0
    report = json.loads(capsys.readouterr().out)

    assert report["machine"]["cores"] >= 1 and report["machine"]["onnxruntime"]
    assert report["frames"] == 16 and report["batch_size"] >= 1 and report["threads"] >= 1
    raw, e2e = report["raw"], report["e2e"]
    assert raw["fps"] > 0 and raw["frames"] == 16
    assert e2e["fps"] > 0 and e2e["frames"] == 16 and e2e["lost"] == 0
    assert report["pipeline_efficiency"] == pytest.approx(e2e["fps"] / raw["fps"])
    assert report["pipeline_efficiency"] > 0
    latency = e2e["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    # read -> received includes the daemon's read -> publish
    assert latency["p50"] >= e2e["daemon_latency_ms"]["p50"]
    assert report["bench_peak_rss_mb"] > 0

    child = report["subprocess"]
    assert child["peak_rss_mb"] > 0
    assert 0 < child["start_to_first_event_s"] <= child["start_to_first_result_s"]
    assert child["fps"] > 0
    assert "keras" not in report  # the Keras comparison lives in benchmarks/onnx_vs_keras.py
    clean = report["by_clean_share"]["0.9"]
    assert clean["clean_frames"] >= 12 and clean["raw_fps"] > 0 and clean["e2e_fps"] > 0  # about 90% of 16
    assert clean["pipeline_efficiency"] == pytest.approx(clean["e2e_fps"] / clean["raw_fps"])
    # The bundled model is a cascade: the share of tiles whose mask decoder was skipped is reported.
    assert report["model"]["form"] == "cascade" and report["providers"] == ["CPUExecutionProvider"]
    assert 0 <= raw["decoder_skipped_share"] <= 1 and 0 <= clean["decoder_skipped_share"] <= 1


def test_bench_refuses_bad_arguments() -> None:
    with pytest.raises(SystemExit) as exc:
        bench_main(["--frames", "0"])
    assert exc.value.code == 2


def test_bench_names_a_provider_this_onnxruntime_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_main(["--providers", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--providers CUDAExecutionProvider: not in this onnxruntime build" in err and "edge-gpu extra" in err


@pytest.mark.tf
def test_keras_twin_is_the_bundled_models_architecture() -> None:
    """Without --keras, the Keras comparison (benchmarks/onnx_vs_keras.py) builds the bundled model's
    architecture from its record (models/default_seg.json): the same convolution kernels, weight for weight
    in count, as the ONNX graph (tf2onnx folds batch normalisation into the convolutions: kernels compare)."""
    pytest.importorskip("tensorflow")
    import numpy as np
    import onnx

    from steel_edge.daemon import BUNDLED_MODEL
    from steel_train.keras_bench import bundled_keras_twin

    model, _ = bundled_keras_twin((256, 1600))
    keras_kernels = sum(int(np.prod(w.shape)) for layer in model.layers if "Conv" in type(layer).__name__
                        for w in layer.weights if "kernel" in w.path)
    from steel_export.cascade import to_single

    graph = to_single(onnx.load(str(BUNDLED_MODEL))).graph  # the bundled file is a cascade: decoder put back in line
    init = {i.name: i for i in graph.initializer}
    onnx_kernels = sum(int(np.prod(init[n.input[1]].dims)) for n in graph.node
                       if n.op_type == "Conv" and n.input[1] in init)
    assert keras_kernels == onnx_kernels > 0
