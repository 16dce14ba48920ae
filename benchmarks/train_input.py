"""Is seg training bound by its input pipeline or by the model? Three rates in one run, on the real frames.

    python benchmarks/train_input.py [--data DIR ...] [--images N] [--steps N] [--set KEY=VALUE ...]

Prints one JSON object:
- ``decode_s``: decoding the images once into the cache (OpenCV in threads);
- ``input_only_batches_per_s``: the ``tf.data`` pipeline alone (crops, copy-paste, augmentation, targets);
- ``model_only_steps_per_s``: training steps on one batch held in memory (no input work at all);
- ``end_to_end_steps_per_s``: training steps fed by the pipeline, as ``steel-train fit`` runs them;
- ``input_efficiency``: end to end over model only (1.0: the input pipeline costs the model nothing).

The defaults are the seg config's (``configs/train_seg.yaml``); ``--set`` changes any key as in ``fit``.
Needs the train extra and ``../shared/data`` (or ``--data``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = Path(os.environ.get("STEEL_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    parser.add_argument("--data", action="append", help="Severstal-layout folder (default: the shared real frames)")
    parser.add_argument("--images", type=int, default=300, help="frames to train on (the first N)")
    parser.add_argument("--steps", type=int, default=40, help="steps timed per rate")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    folders = [Path(d) for d in args.data] if args.data else [shared / "severstal_more", shared / "severstal"]

    from steel_edge.configfile import parse_set_flags
    from steel_train.config import load_train_config
    from steel_train.fit import compile_seg, seed_everything
    from steel_train.models import build_seg
    from steel_train.pipeline import SegSource, seg_datasets
    from steel_train.records import load_seg_records

    cfg = load_train_config("seg", None, parse_set_flags(args.set))
    seed_everything(0)
    records = load_seg_records(folders)[: args.images]
    started = time.perf_counter()
    source = SegSource(records, cache=True)
    decode_s = time.perf_counter() - started
    epochs = 1 + (3 * args.steps * cfg.data.batch_size) // max(1, len(records) * cfg.data.crops_per_image)
    train_ds, _, _ = seg_datasets(source, source, cfg.data, cfg.model, 0, epochs)

    def rate(fn, n: int) -> float:  # type: ignore[no-untyped-def]
        fn(3)  # warm up: graph tracing, thread pools
        started = time.perf_counter()
        fn(n)
        return n / (time.perf_counter() - started)

    batches = iter(train_ds)
    input_only = rate(lambda n: [next(batches) for _ in range(n)], args.steps)

    model = build_seg(cfg.model)
    compile_seg(model, cfg)
    x, y = next(batches)
    model_only = rate(lambda n: [model.train_on_batch(x, y) for _ in range(n)], args.steps)
    end_to_end = rate(lambda n: model.fit(train_ds.skip(6 + args.steps), steps_per_epoch=n, epochs=1, verbose=0),
                      args.steps)
    print(json.dumps({
        "images": len(records), "batch_size": cfg.data.batch_size,
        "crop": [cfg.data.crop_height, cfg.data.crop_width], "cores": os.cpu_count(),
        "decode_s": round(decode_s, 2),
        "input_only_batches_per_s": round(input_only, 2),
        "model_only_steps_per_s": round(model_only, 2),
        "end_to_end_steps_per_s": round(end_to_end, 2),
        "input_efficiency": round(end_to_end / model_only, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
