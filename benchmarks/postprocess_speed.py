"""Post-processing speed per tile on realistic model outputs, at full (256x1600) and half (128x800) resolution.

    python benchmarks/postprocess_speed.py [--repeat N] [--threads N]

Prints one JSON object: median (and best) milliseconds per tile for
- ``defect``: blobs in classes 1 and 3, false-positive specks in every class, presence high for 1 and 3;
- ``clean_gated``: the same outputs with every presence score under its threshold (most tiles on a line);
- ``no_presence_head``: every class processed, only specks to find and remove;
and, at half resolution, ``upsample_first``: the alternative of upsampling each binary mask to the frame
before labelling, which ``steel_edge.postprocess`` does not do (components are labelled at the model's
resolution and scaled, exactly).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from steel_edge.postprocess import (
    PostprocessParams,
    binarize,
    find_components,
    keep_components,
    masks_only,
    postprocess,
    upscale,
)

FRAME = (256, 1600)


def realistic_probs(seed: int = 0) -> np.ndarray:
    """(4, 256, 1600) float32: smooth low background, a few soft-edged blobs, some bright specks."""
    rng = np.random.default_rng(seed)
    h, w = FRAME
    probs = np.empty((4, h, w), np.float32)
    for c in range(4):
        noise = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 6)
        layer = np.ascontiguousarray((noise - noise.min()) / (np.ptp(noise) + 1e-6) * 0.35)
        if c in (0, 2):  # a few defects: ellipses for class 1 (pits), long streaks for class 3 (scratches)
            for _ in range(3):
                centre = (int(rng.integers(100, w - 100)), int(rng.integers(30, h - 30)))
                axes = (int(rng.integers(20, 60)), int(rng.integers(8, 25))) if c == 0 else \
                    (int(rng.integers(150, 400)), int(rng.integers(4, 10)))
                cv2.ellipse(layer, centre, axes, float(rng.uniform(0, 30)), 0, 360, float(rng.uniform(0.7, 0.95)), -1)
        for _ in range(12):  # false-positive specks a few pixels across, above any sensible threshold
            y, x = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
            layer[y:y + int(rng.integers(2, 6)), x:x + int(rng.integers(2, 6))] = 0.8
        probs[c] = cv2.GaussianBlur(layer, (5, 5), 0)
    return probs


def half(probs: np.ndarray) -> np.ndarray:
    return np.stack([cv2.resize(p, (FRAME[1] // 2, FRAME[0] // 2), interpolation=cv2.INTER_AREA) for p in probs])


def upsample_first(probs: np.ndarray, presence: np.ndarray, params: PostprocessParams) -> np.ndarray:
    """The road not taken: binary mask upsampled to the frame, then labelled there."""
    masks = np.zeros((4, *FRAME), np.uint8)
    for c in range(4):
        if presence[c] < params.presence_threshold[c]:
            continue
        comps = find_components(upscale(binarize(probs[c], params.pixel_threshold[c]), FRAME))
        keep = keep_components(comps.areas, params.min_component[c], params.min_area[c])
        if keep.any():
            masks[c] = comps.mask(keep)
    return masks


def timed(cases: dict[str, Callable[[], object]], repeat: int) -> dict[str, dict[str, float]]:
    """Median and best time of each case, run round-robin so that load from elsewhere hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()
    for _ in range(repeat):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: {"ms_median": round(float(np.median(t)) * 1e3, 3), "ms_min": round(min(t) * 1e3, 3),
                   "tiles_per_s": round(1.0 / float(np.median(t)), 1)} for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's own)")
    args = parser.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    params = PostprocessParams()
    defect = np.array([0.9, 0.2, 0.85, 0.1], np.float32)
    clean = np.full(4, 0.1, np.float32)
    full = realistic_probs()
    report: dict[str, object] = {
        "machine": f"{platform.machine()} cpus={len(os.sched_getaffinity(0))} cv2_threads={cv2.getNumThreads()}",
        "opencv": cv2.__version__,
        "params": params.model_dump(mode="json"),
    }
    for name, probs in (("full_256x1600", full), ("half_128x800", half(full))):
        result = postprocess(probs, defect, params, FRAME)
        cases: dict[str, Callable[[], object]] = {
            "defect": partial(postprocess, probs, defect, params, FRAME),
            "defect_with_rle": partial(postprocess, probs, defect, params, FRAME, with_rle=True),
            "defect_masks_only": partial(masks_only, probs, defect, params, FRAME),
            "clean_gated": partial(postprocess, probs, clean, params, FRAME),
            "no_presence_head": partial(postprocess, probs, None, params, FRAME),
        }
        if probs.shape[1:] != FRAME:
            assert np.array_equal(upsample_first(probs, defect, params), result.masks)
            cases["upsample_first_masks_only"] = partial(upsample_first, probs, defect, params)
        report[name] = {"defects_found": [[d.class_id, d.area_px] for d in result.defects],
                        **timed(cases, args.repeat)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
