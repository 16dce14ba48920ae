"""``steel-edge bench``: how much of the model's raw speed the whole pipeline delivers, measured in one run.

    steel-edge bench [--model FILE] [--frames N] [--batch-size B] [--threads T] [--json] [--seed S]

Every figure comes from the *same* N synthetic strip frames (``steel_edge.data.synth.write_dataset``:
JPEGs on disk, about half of them defect-free, like a real line), so the ratios compare like with like:

- ``raw``: ``session.run`` alone on already-decoded, already-converted float32 batches, at the batch size
  and thread count the daemon uses (same session options: ``load_model`` with spinning off). This is the
  ceiling: no pipeline built on this model and this CPU can beat it. One warm-up batch is not timed.
- ``e2e``: the real ``Daemon`` in batch mode (``once``) on the JPEG folder, in this process, publishing on
  loopback TCP to a ``Subscriber`` that receives every event. Throughput = results / (time the ``eos``
  event was received - time the first event was received). The first event is the daemon's initial
  ``status``, sent by the publishing thread right after it started the capture and inference threads:
  so the window is "processing started" to "the subscriber holds the last result", and excludes building
  the daemon (model load) and the ZeroMQ subscription handshake. The window includes the daemon's first
  (cold) onnxruntime batch. ``pipeline_efficiency`` = e2e fps / raw fps.
- ``latency``: frame read -> event received by the subscriber, per result. The daemon stamps
  ``latency_ms`` (monotonic: file read start -> just before send) and ``published_at`` (wall clock, at the
  same instant); the subscriber adds (receive wall time - ``published_at``). Both wall-clock readings are
  taken in this one process, so there is no clock skew; ``captured_at`` is not used because a folder
  source stamps it after decoding, which would hide the decode time.
- ``subprocess``: ``steel-edge --source folder:DIR --once ...`` as a child process on the same folder:
  its peak resident memory (``ru_maxrss`` of exactly that child, from ``os.wait4``), the time from spawning
  it to the first result received (interpreter start, imports, model load, bind, first batch), and its
  throughput measured as for ``e2e``. This is what an operator sees on the edge box.
The Keras comparison (the same architecture through Keras ``predict``) lives outside the edge package,
in ``benchmarks/onnx_vs_keras.py``: the edge never imports TensorFlow, by any route.

Nothing here asserts a speed: machines are shared and noisy. The output names the machine it ran on.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from steel_edge.config import EdgeConfig
from steel_edge.daemon import build_daemon
from steel_edge.data.imageio import decode_gray
from steel_edge.events import DefectEvent, EndOfStreamEvent, ErrorEvent
from steel_edge.model import EdgeModel, available_threads
from steel_edge.subscriber import Subscriber

PROG = "steel-edge bench"
DESCRIPTION = "How much of the model's raw speed the whole pipeline delivers, measured in one run."
_RECV_TIMEOUT_S = 120.0  # no event for this long means the daemon is stuck: fail rather than hang


class BenchError(RuntimeError):
    """A measurement could not be made (daemon error, lost events, child failed)."""


# -- machine ----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    """What the numbers were measured on: without it a figure in a README cannot be compared."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort

    return {"cpu": cpu, "cores": available_threads(), "host_cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "onnxruntime": ort.__version__, "numpy": np.__version__,
            "pyzmq": zmq.__version__, "os": f"{platform.system()} {platform.release()}"}


# -- helpers ----------------------------------------------------------------------------------------
def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, np.float64), q)) if values else None


def vm_hwm_mb() -> float:
    """Peak resident memory of this process so far (``VmHWM``), MB; ru_maxrss where /proc is absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat; None where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


class Steal:
    """CPU time the hypervisor gave to other guests during a phase, in percent of all CPU time.

    On a shared VM this is what makes the same command 2x slower from one minute to the next; a figure
    measured under heavy steal is not comparable, so each phase reports it.
    """

    def __enter__(self) -> Steal:
        self.start = _cpu_ticks()
        self.pct: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_ticks()
        if self.start is not None and end is not None and end[1] > self.start[1]:
            self.pct = round(100 * (end[0] - self.start[0]) / (end[1] - self.start[1]), 2)


def _free_tcp_port() -> int:
    """A loopback port free right now, for the child daemon (whose bound ``*`` port we could not learn)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CPU = ("CPUExecutionProvider",)


def make_frames(folder: Path, frames: int, seed: int, clean_share: float | None = None) -> list[Path]:
    """Write ``frames`` synthetic 1600x256 JPEGs and return them in name order; ``clean_share`` is the share
    of defect-free frames (default: the generator's, about half, like the Kaggle train set)."""
    from steel_edge.data.synth import SynthConfig, write_dataset

    config = SynthConfig() if clean_share is None else SynthConfig(defect_free_share=clean_share)
    write_dataset(folder, frames, seed, config)
    files = sorted((folder / "train_images").glob("*.jpg"))
    if len(files) != frames:
        raise BenchError(f"expected {frames} frames in {folder}, found {len(files)}")
    return files


def _batches(files: Sequence[Path], size: int) -> list[list[Path]]:
    return [list(files[i:i + size]) for i in range(0, len(files), size)]


def _decode(files: Sequence[Path], shape: tuple[int, int]) -> np.ndarray:
    return np.stack([decode_gray(p.read_bytes(), p, expect=shape) for p in files])


# -- raw onnxruntime --------------------------------------------------------------------------------
def bench_raw(model: EdgeModel, files: Sequence[Path], batch_size: int, repeat: int = 3) -> dict[str, Any]:
    """``session.run`` alone, batch by batch; decoding and conversion happen outside the timed calls.

    ``repeat`` passes over all frames; ``fps`` is the median pass (what ``pipeline_efficiency`` divides
    by), ``fps_best`` the fastest. Shared VMs swing by a third from one second to the next (measured: 300
    vs 440 frames/s at 2 threads, same box, minutes apart); one pass would make the ratio a coin toss.
    Frames are decoded again for each batch (untimed) so this process never holds all N tiles (400 float
    tiles would be 650 MB and would distort the memory figures measured afterwards).
    """
    spec = model.contract.input
    batches = _batches(files, batch_size)

    def feed(paths: Sequence[Path]) -> np.ndarray:
        return model.to_tensor(_decode(paths, (spec.height, spec.width)))

    model.run_tensor(feed(batches[0]))  # warm-up: first-call allocations are not throughput
    passes: list[float] = []
    per_batch: list[float] = []
    skipped = 0
    for r in range(repeat):
        total = 0.0
        for paths in batches:
            inputs = feed(paths)
            t0 = time.perf_counter()
            outputs = model.run_tensor(inputs)
            dt = time.perf_counter() - t0
            total += dt
            per_batch.append(dt)
            if r == 0:
                skipped += _skipped_tiles(model, outputs)
        passes.append(total)
    seconds = float(np.median(passes))
    report = {"frames": len(files), "batches": len(batches), "passes": repeat, "seconds": seconds,
              "fps": len(files) / seconds, "fps_best": len(files) / min(passes),
              "fps_passes": [len(files) / p for p in passes],
              "batch_ms_p50": 1000 * float(np.median(per_batch)), "frame_ms": 1000 * seconds / len(files)}
    if model.contract.form == "cascade":
        report["decoder_skipped_share"] = skipped / len(files)
    return report


def _skipped_tiles(model: EdgeModel, outputs: Sequence[np.ndarray]) -> int:
    """Tiles of one batch whose mask decoder a cascade model skipped: the batch's masks are zeros (the decoder runs
    for the whole batch or for none of it) and every tile is under the skip rule."""
    params = model.contract.postprocess
    if model.contract.form != "cascade" or params is None:
        return 0
    masks, presence = outputs
    return len(presence) if not masks.any() and all(params.skips(p) for p in presence) else 0


# -- the daemon, in process -------------------------------------------------------------------------
def bench_config(folder: Path, model_path: Path, state_dir: Path, batch_size: int, threads: int,
                 providers: Sequence[str] = CPU) -> EdgeConfig:
    """The daemon's config for a benchmark: batch mode, loopback, one subscriber, no journal or reload.

    The journal is off because it is a per-event SQLite write whose cost is its own question (and it
    would leave a file under ~/.local/state); reload polling is off because the file does not change.
    """
    data: dict[str, Any] = {
        "camera": "bench", "source": f"folder:{folder}", "model": str(model_path), "once": True,
        "publish": {"endpoints": ["tcp://127.0.0.1:*"], "wait_subscribers": 1, "wait_timeout_s": 30.0},
        "pipeline": {"batch_size": batch_size}, "inference": {"threads": threads, "providers": list(providers)},
        "folder": {"state_dir": str(state_dir)}, "reload": {"enabled": False}, "journal": {"enabled": False},
    }
    return EdgeConfig.model_validate(data)


class _Collector:
    """Reads one daemon's events until ``eos``; keeps the timings the report needs."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.first_event: float | None = None  # monotonic
        self.first_result: float | None = None
        self.eos: float | None = None
        self.results = 0
        self.with_defects = 0
        self.errors: list[str] = []
        self.latency_ms: list[float] = []
        self.daemon_latency_ms: list[float] = []
        self.eos_frames: int | None = None

    def run(self, alive: threading.Event | None = None) -> None:
        while True:
            msg = self.sub.recv(timeout=_RECV_TIMEOUT_S)
            now_mono, now_wall = time.monotonic(), time.time()
            if msg is None:
                raise BenchError(f"no event for {_RECV_TIMEOUT_S:.0f} s after {self.results} results")
            ev = msg.event
            if self.first_event is None:
                self.first_event = now_mono
            if isinstance(ev, DefectEvent):
                if self.first_result is None:
                    self.first_result = now_mono
                self.results += 1
                self.with_defects += bool(ev.defects)
                if ev.latency_ms is not None:
                    transit_ms = (now_wall - ev.published_at.timestamp()) * 1000
                    self.daemon_latency_ms.append(ev.latency_ms)
                    self.latency_ms.append(ev.latency_ms + max(0.0, transit_ms))
            elif isinstance(ev, ErrorEvent):
                self.errors.append(f"{ev.error}: {ev.message}")
            elif isinstance(ev, EndOfStreamEvent):
                self.eos = now_mono
                self.eos_frames = ev.frames_processed
                return

    def summary(self, frames: int) -> dict[str, Any]:
        if self.first_event is None or self.eos is None:
            raise BenchError("the daemon ended without an eos event")
        if self.errors:
            raise BenchError(f"the daemon reported {len(self.errors)} error(s), first: {self.errors[0]}")
        if self.results != frames or self.sub.missing:
            raise BenchError(f"received {self.results} of {frames} results ({self.sub.missing} lost in seq gaps)")
        seconds = self.eos - self.first_event
        return {"frames": self.results, "with_defects": self.with_defects, "seconds": seconds,
                "fps": self.results / seconds, "lost": self.sub.missing,
                "latency_ms": {"p50": _percentile(self.latency_ms, 50), "p99": _percentile(self.latency_ms, 99),
                               "max": max(self.latency_ms, default=None)},
                "daemon_latency_ms": {"p50": _percentile(self.daemon_latency_ms, 50),
                                      "p99": _percentile(self.daemon_latency_ms, 99)}}


def bench_e2e(cfg: EdgeConfig, frames: int) -> dict[str, Any]:
    """The real daemon on a thread of this process, read by a ``Subscriber`` connected before it starts."""
    daemon = build_daemon(cfg)
    codes: list[int] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            codes.append(daemon.run())
        except BaseException as err:  # surfaced below: a benchmark must not report a crashed daemon as fast
            failure.append(err)

    with Subscriber(daemon.publisher.bound[0]) as sub:
        collector = _Collector(sub)
        thread = threading.Thread(target=run, name="bench-daemon", daemon=True)
        thread.start()
        try:
            collector.run()
        finally:
            daemon.stop()
            thread.join(timeout=30)
    if failure:
        raise BenchError(f"the daemon failed: {failure[0]!r}") from failure[0]
    if codes != [0]:
        raise BenchError(f"the daemon exited with {codes}")
    return collector.summary(frames)


def bench_live(model_path: Path, threads: int, fps: float, seconds: float,
               providers: Sequence[str] = CPU) -> dict[str, Any]:
    """Live mode under overload: a fake line camera (``synth:``) at ``fps`` (twice what the pipeline
    does end to end) for ``seconds``. The camera does not wait: frames are dropped oldest-first and
    counted, and latency (capture -> received) must stay bounded instead of growing with the backlog."""
    cfg = EdgeConfig.model_validate({
        "camera": "bench-live", "source": "synth:3", "model": str(model_path), "live": {"fps": fps},
        "publish": {"endpoints": ["tcp://127.0.0.1:*"], "wait_subscribers": 1, "wait_timeout_s": 30.0},
        "inference": {"threads": threads, "providers": list(providers)}, "reload": {"enabled": False},
        "journal": {"enabled": False}, "status": {"interval_s": 1.0},
    })
    daemon = build_daemon(cfg)
    thread = threading.Thread(target=daemon.run, name="bench-live", daemon=True)
    with Subscriber(daemon.publisher.bound[0]) as sub:
        collector = _Collector(sub)
        thread.start()
        timer = threading.Timer(seconds, daemon.stop)
        timer.start()
        try:
            collector.run()
        finally:
            timer.cancel()
            daemon.stop()
            thread.join(timeout=30)
    lat = collector.latency_ms
    half = lat[len(lat) // 2:]  # the second half: the queue has long been full
    return {"camera_fps": fps, "seconds": seconds, "frames_in": daemon.stats.frames_in,
            "results": collector.results, "drops": daemon.frames.drops,
            "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99), "max": max(lat, default=None)},
            "latency_ms_second_half": {"p50": _percentile(half, 50), "p99": _percentile(half, 99)}}


# -- the daemon as an edge box runs it --------------------------------------------------------------
class _PeakRss(threading.Thread):
    """Reads the child's ``VmHWM`` (peak resident set) every 20 ms until it exits; keeps the last value.

    Not ``ru_maxrss`` from ``wait4``: Linux carries the pre-``exec`` high-water mark into the child's
    figure, and Python spawns with ``vfork``, so the child would report this (bigger) process's peak.
    ``VmHWM`` only grows, so the last reading before exit is the peak (the daemon allocates nothing
    once its eos is out).
    """

    def __init__(self, pid: int) -> None:
        super().__init__(name="bench-rss", daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.peak_kb = 0

    def run(self) -> None:
        while True:
            try:
                text = self.status.read_text()
            except OSError:  # gone (reaped)
                return
            hwm = [line for line in text.splitlines() if line.startswith("VmHWM:")]
            if not hwm:  # a zombie has no memory lines left: it is over
                return
            self.peak_kb = max(self.peak_kb, int(hwm[0].split()[1]))
            time.sleep(0.02)


def _daemon_command() -> list[str]:
    script = Path(sys.executable).with_name("steel-edge")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "steel_edge.cli"]


def bench_subprocess(folder: Path, model_path: Path, state_dir: Path, batch_size: int, threads: int,
                     frames: int, log: Path, providers: Sequence[str] = CPU) -> dict[str, Any]:
    """``steel-edge --source folder:DIR --once`` as a child: its peak RSS, start -> first result, fps."""
    endpoint = f"tcp://127.0.0.1:{_free_tcp_port()}"
    sets = {"publish.wait_subscribers": 1, "publish.wait_timeout_s": 30, "journal.enabled": "false",
            "reload.enabled": "false", "folder.state_dir": str(state_dir), "pipeline.batch_size": batch_size,
            "inference.threads": threads, "inference.providers": f"[{', '.join(providers)}]"}
    cmd = [*_daemon_command(), "--source", f"folder:{folder}", "--once", "--model", str(model_path),
           "--publish", endpoint, "--camera", "bench", "--log-level", "WARNING"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.setsockopt(zmq.RECONNECT_IVL, 10)  # the child binds later than we connect: retry every 10 ms, not 100
    try:
        with Subscriber(endpoint, context=ctx) as sub, log.open("wb") as out:
            collector = _Collector(sub)
            t_spawn = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            watcher = _PeakRss(proc.pid)
            watcher.start()
            try:
                collector.run()
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                watcher.join()
    finally:
        ctx.term()
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited with {proc.returncode}: {log.read_text()[-2000:]}")
    summary = collector.summary(frames)
    assert collector.first_result is not None and collector.first_event is not None
    return {"command": " ".join(cmd), "peak_rss_mb": watcher.peak_kb / 1024,
            "start_to_first_event_s": collector.first_event - t_spawn,
            "start_to_first_result_s": collector.first_result - t_spawn,
            "fps": summary["fps"], "latency_ms": summary["latency_ms"]}
