"""``steel-edge demo``: the whole product on one machine, with no camera and no training.

It writes generated strip frames (Kaggle layout, labels included) to a temporary folder, or takes a
Severstal-layout folder you name (``--data DIR``), runs the daemon on it in batch mode with the
bundled model, and prints what a subscriber connected over loopback ZeroMQ receives: one line per
event. Because result events carry each defect's RLE here, the subscriber can score what it received
against the labels: the Kaggle Dice it prints is the Dice of the events, the full chain end to end.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from steel_edge.config import EdgeConfig, FolderConfig, JournalConfig, PublishConfig, ReloadConfig, StatusConfig
from steel_edge.data.rle import decode
from steel_edge.data.severstal import SeverstalImage, load_severstal
from steel_edge.events import DefectEvent, EndOfStreamEvent, ErrorEvent, StatusEvent
from steel_edge.metrics import SegmentationScores, all_empty_dice


def run_demo(root: Path, state_dir: Path, model: str | None, as_json: bool) -> int:
    from steel_edge.daemon import build_daemon
    from steel_edge.subscriber import Subscriber

    truth = {item.image_id: item for item in load_severstal(root).images}
    cfg = EdgeConfig(
        camera="demo", source=f"folder:{root / 'train_images'}", once=True, model=Path(model) if model else None,
        publish=PublishConfig(endpoints=("tcp://127.0.0.1:*",), wait_subscribers=1, rle=True),
        folder=FolderConfig(state_dir=state_dir, quarantine=False), status=StatusConfig(interval_s=1.0),
        reload=ReloadConfig(enabled=False),
        journal=JournalConfig(path=state_dir / "events.journal", replay_endpoint="tcp://127.0.0.1:*"))
    daemon = build_daemon(cfg)
    endpoint = daemon.publisher.bound[0]
    print(f"daemon publishing on {endpoint}; model {daemon.model_path.name} sha256 {daemon.model.sha256[:12]}; "
          f"subscriber connected", file=sys.stderr)
    quality = real_frame_quality(daemon.model_path, daemon.model.sha256)
    print(f"{quality}\n" if quality else "", file=sys.stderr)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()), name="demo-daemon", daemon=True)
    scores = SegmentationScores()
    present = []
    gaps = results = 0
    start = time.monotonic()
    with Subscriber(endpoint) as sub:
        runner.start()
        while True:
            msg = sub.recv(timeout=60)
            if msg is None:
                print("no event for 60 s; giving up", file=sys.stderr)
                daemon.stop()
                break
            gaps += msg.gap is not None
            event = msg.event
            if as_json:
                print(event.model_dump_json(by_alias=True), flush=True)
            else:
                print(_line(event, truth), flush=True)
            if isinstance(event, DefectEvent) and event.frame_id in truth:
                results += 1
                true = truth[event.frame_id].masks()
                scores.update(event_masks(event), true)
                present.append(true.reshape(4, -1).any(axis=1))
            if isinstance(event, EndOfStreamEvent):
                break
    runner.join(timeout=30)
    elapsed = time.monotonic() - start
    if results:
        per_image = scores.per_image()
        base = all_empty_dice(np.array(present))
        per_class = {str(c): round(float(v), 3) for c, v in zip(range(1, 5), per_image.mean(axis=0), strict=True)}
        print(f"\n{results} frames received in {elapsed:.1f} s, {gaps} gaps; Kaggle Dice of the received events "
              f"{per_image.mean():.3f} (all-empty baseline {base:.3f}); per class {json.dumps(per_class)}",
              file=sys.stderr)
    return (codes or [1])[0] or int(results != len(truth))


def real_frame_quality(model_path: Path, sha256: str) -> str | None:
    """One line on how good a model is on real frames it never trained on, from its record (``NAME.json`` beside
    it, as ``scripts/build_default_model.sh`` writes for the bundled model); None without a matching record."""
    record_path = model_path.with_suffix(".json")
    try:
        record = json.loads(record_path.read_text())
        test = record["real_test"]
        if record.get("sha256") != sha256:
            return None
        gain = test["gain_over_all_empty"]
        recall = "/".join(_short(test["recall_per_class"].get(k)) for k in ("1", "2", "3", "4"))
        precision = "/".join(_short(test["precision_per_class"].get(k)) for k in ("1", "2", "3", "4"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (f"model quality on {test['images']} real Severstal frames it never trained on: Kaggle Dice "
            f"{test['dice_mean']:.3f} vs {test['dice_all_empty']:.3f} for predicting nothing "
            f"(gain {gain['mean']:+.3f}, 95% {gain['ci95'][0]:+.3f}..{gain['ci95'][1]:+.3f}); "
            f"image-level recall per class 1/2/3/4 {recall}, "
            f"precision {precision}")


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def event_masks(event: DefectEvent) -> np.ndarray:
    """(4, H, W) masks of a seg result, rebuilt from its defects' RLEs (events published with ``publish.rle``)."""
    shape = (event.frame.height, event.frame.width)
    out = np.zeros((4, *shape), np.uint8)
    for d in event.defects:
        if d.rle is None:
            raise ValueError(f"{event.frame_id}: defect without an RLE; publish with publish.rle: true")
        out[d.class_id - 1] |= decode(d.rle, shape)
    return out


def _line(event: object, truth: dict[str, SeverstalImage]) -> str:
    if isinstance(event, DefectEvent):
        found = ", ".join(f"class {d.class_id} {d.area_px} px score {d.score:.2f} at {list(d.bbox)}"
                          for d in event.defects) or "no defect"
        item = truth.get(event.frame_id)
        labels = "" if item is None else "   labels: " + (", ".join(f"class {c}" for c in item.classes) or "none")
        return f"#{event.seq:<4} result {event.frame_id}: {found}{labels}   ({event.latency_ms or 0:.0f} ms)"
    if isinstance(event, StatusEvent):
        lat = f", p50 {event.latency.p50_ms:.0f} ms" if event.latency else ""
        return f"#{event.seq:<4} status {event.state}: {event.frames_out} frames out, {event.fps:.1f} fps{lat}"
    if isinstance(event, ErrorEvent):
        return f"#{event.seq:<4} error {event.error}: {event.message}"
    if isinstance(event, EndOfStreamEvent):
        return f"#{event.seq:<4} eos {event.reason}: {event.frames_processed} frames, {event.errors} errors"
    return repr(event)
