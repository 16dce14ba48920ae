"""More than one camera on one box: N daemons (one per camera, separate processes), measured together.

    python benchmarks/multicamera.py [--cameras 1 2] [--frames 600] [--threads 1]

Each daemon processes its own folder of the same generated JPEG frames in batch mode and publishes on
its own loopback endpoint; one subscriber in this process reads all of them. Reports, per N, the total
results per second from the first result to the last end-of-stream, and the slowest camera's rate.
One process per camera is the supported layout: a camera, a model reload or a crash in one daemon
cannot stop the others, and each gets its own journal, seq and metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from steel_edge.data.synth import write_dataset
from steel_edge.events import DefectEvent, EndOfStreamEvent, decode_message


def _endpoint(ctx: zmq.Context) -> str:  # type: ignore[type-arg]
    s = ctx.socket(zmq.PUB)
    s.bind("tcp://127.0.0.1:*")
    ep = s.getsockopt_string(zmq.LAST_ENDPOINT)
    s.close(0)
    return ep


def run(n: int, frames_dir: Path, work: Path, threads: int) -> dict[str, float]:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    procs = []
    for cam in range(n):
        folder = work / f"cam{cam}"
        shutil.copytree(frames_dir, folder)
        ep = _endpoint(ctx)
        sub.connect(ep)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "steel_edge.cli", "--source", f"folder:{folder}", "--once", "--camera", f"cam{cam}",
             "--publish", ep, "--log-level", "WARNING", "--set", "publish.wait_subscribers=1",
             "--set", f"inference.threads={threads}", "--set", "reload.enabled=false",
             "--set", f"journal.path={work / f'cam{cam}.journal'}", "--set", "journal.replay_endpoint=tcp://127.0.0.1:*",
             "--set", f"folder.state_dir={work / f'state{cam}'}"]))
    first = None
    done: dict[str, float] = {}
    counts: dict[str, int] = {}
    while len(done) < n:
        if not sub.poll(120_000):
            raise RuntimeError("daemons went silent")
        event, _ = decode_message(sub.recv_multipart())
        now = time.monotonic()
        if isinstance(event, DefectEvent):
            first = first or now
            counts[event.camera] = counts.get(event.camera, 0) + 1
        if isinstance(event, EndOfStreamEvent):
            done[event.camera] = now
    for p in procs:
        p.wait(timeout=60)
    sub.close(0)
    ctx.term()
    assert first is not None
    wall = max(done.values()) - first
    total = sum(counts.values())
    return {"cameras": n, "results": total, "total_fps": total / wall,
            "slowest_camera_fps": min(counts[c] / (done[c] - first) for c in counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per daemon")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="steel-edge-multicam-") as tmp:
        data = Path(tmp) / "data"
        write_dataset(data, images=args.frames, seed=21)
        rows = []
        for n in args.cameras:
            work = Path(tmp) / f"n{n}"
            work.mkdir()
            rows.append(run(n, data / "train_images", work, args.threads))
    print(json.dumps({"cpus": len(os.sched_getaffinity(0)), "frames_per_camera": args.frames,
                      "threads_per_daemon": args.threads, "runs": rows}))


if __name__ == "__main__":
    main()
