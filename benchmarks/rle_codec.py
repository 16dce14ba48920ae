"""RLE codec speed on real-sized masks: decode and encode of a 1600x256 mask with ~30k defect pixels.

    python benchmarks/rle_codec.py [--repeat N]

Prints one JSON object. The acceptance target is decode under 1 ms; the per-pixel Python loop this
replaces would take ~10 ms for the same mask.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import cv2
import numpy as np

from steel_edge.data.rle import decode, encode


def realistic_mask(seed: int = 0, target_px: int = 30_000) -> np.ndarray:
    """A few filled polygons, like the real labels' coarse outlines, totalling about ``target_px``."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((256, 1600), np.uint8)
    while mask.sum() < target_px:
        cx, cy = int(rng.integers(100, 1500)), int(rng.integers(30, 226))
        pts = np.stack([cx + rng.integers(-90, 90, 7), cy + rng.integers(-40, 40, 7)], axis=1)
        cv2.fillPoly(mask, [cv2.convexHull(pts.astype(np.int32))], 1)
    return mask


def best_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    mask = realistic_mask()
    rle = encode(mask)
    assert np.array_equal(decode(rle), mask)
    dec_min, dec_med = best_of(lambda: decode(rle), args.repeat)
    enc_min, enc_med = best_of(lambda: encode(mask), args.repeat)
    print(json.dumps({
        "machine": f"{platform.machine()} cpus={len(os.sched_getaffinity(0))}",
        "defect_px": int(mask.sum()),
        "runs": len(rle.split()) // 2,
        "decode_ms_min": round(dec_min * 1e3, 3),
        "decode_ms_median": round(dec_med * 1e3, 3),
        "encode_ms_min": round(enc_min * 1e3, 3),
        "encode_ms_median": round(enc_med * 1e3, 3),
    }))


if __name__ == "__main__":
    main()
