"""The daemon's configuration (``configs/edge.yaml``): one pydantic model, unknown keys rejected.

Loaded with ``steel_edge.configfile.load_config``, so a bad value is reported as ``file:line: key.path:
message`` (``steel-edge validate-config FILE``); CLI flags (``--source``, ``--model``, ``--publish``,
``--camera``, ``--once``) are applied as overrides before validation. Every field has a description and
bounds; defaults are what a single camera on a small CPU box wants.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from steel_edge.endpoints import DEFAULT_ENDPOINT
from steel_edge.events import CameraId
from steel_edge.names import IMAGE_SUFFIXES
from steel_edge.postprocess import PostprocessParams

IMAGE_PATTERNS = tuple(f"*{suffix}" for suffix in IMAGE_SUFFIXES)
Seconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PublishConfig(_Section):
    endpoints: tuple[str, ...] = Field(
        (DEFAULT_ENDPOINT,), min_length=1,
        description="ZeroMQ endpoints; a plain or '@'-prefixed endpoint is bound, a '>'-prefixed one is connected "
                    "(to a steel-edge proxy). Loopback by default: binding another interface is explicit")
    sndhwm: int = Field(10000, ge=1, description="messages queued per subscriber before ZeroMQ drops for it")
    linger_ms: int = Field(2000, ge=0, description="how long close() waits to flush queued messages")
    wait_subscribers: int = Field(
        0, ge=0, description="batch mode: hold the first message until this many subscriptions arrived "
                             "(ZeroMQ drops what is sent before a subscriber's subscription reaches the publisher)")
    wait_timeout_s: float = Field(10.0, ge=0, description="give up waiting for subscribers after this long")
    start_grace_s: float = Field(
        1.0, ge=0, description="file sources (batch, video): wait up to this long for a first subscription before the "
                               "first message, so a subscriber started before the run receives all of it (0: off)")
    rle: bool = Field(False, description="add each defect's Kaggle RLE to result events")
    crop: Literal["none", "defects"] = Field(
        "none", description="defects: a third message part, a JPEG of the frame region holding the defects")
    crop_max_width: int = Field(800, ge=16, description="crops wider than this are scaled down")
    jpeg_quality: int = Field(85, ge=10, le=100)

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ep in value:
            bare = ep.lstrip("@>")
            if "://" not in bare:
                raise ValueError(f"{ep!r} is not a ZeroMQ endpoint (e.g. tcp://127.0.0.1:5555, ipc:///tmp/x)")
        return value


class PipelineConfig(_Section):
    batch_size: int = Field(
        1, ge=1, le=256, description="frames per onnxruntime call at most; 1 is fastest on a small CPU (measured: "
                                     "batches of 4 ran 12% slower per frame), GPUs want more")
    max_batch_wait_ms: float = Field(
        2.0, ge=0, description="wait this long for a batch to fill before running a partial one")
    queue_size: int = Field(8, ge=1, description="frames held between capture and inference")
    overflow: Literal["auto", "wait", "drop_oldest"] = Field(
        "auto", description="auto: live sources drop the oldest frame, files wait; or force one policy")


class InferenceConfig(_Section):
    threads: int | None = Field(
        None, ge=1, description="onnxruntime intra-op threads; default: the CPUs of the affinity minus one (at least "
                                "one), leaving a core to decoding and post-processing")
    spinning: bool = Field(False, description="spinning workers answer sooner but burn CPU while idle")
    providers: tuple[str, ...] = Field(
        ("CPUExecutionProvider",), min_length=1,
        description="onnxruntime execution providers, preferred first: CUDAExecutionProvider (onnxruntime-gpu), "
                    "OpenVINOExecutionProvider (onnxruntime-openvino), CPUExecutionProvider")


class FolderConfig(_Section):
    patterns: tuple[str, ...] = Field(IMAGE_PATTERNS, min_length=1, description="file name globs to process")
    recursive: bool = Field(False, description="also look in sub-folders")
    settle_s: float = Field(
        1.0, ge=0, description="watch mode: a file is complete once its size and mtime held still this long")
    poll_s: Seconds = Field(0.25, description="watch mode: how often to look for new files")
    state_dir: Path | None = Field(None, description="where the processed-file ledger lives; default DIR/.steel-edge")
    quarantine: bool = Field(True, description="move unreadable files to the quarantine folder (else record only)")
    quarantine_dir: Path | None = Field(None, description="default: STATE_DIR/quarantine")
    reprocess: bool = Field(False, description="process every file again, whatever the ledger says (--reprocess); "
                                               "the ledger goes on recording")


class LiveConfig(_Section):
    fps: float | None = Field(None, gt=0, description="synth: sources: frames per second (none: as fast as read)")
    open_timeout_s: Seconds = Field(10.0, description="network streams: give up opening after this long")
    read_timeout_s: Seconds = Field(5.0, description="network streams and cameras: no frame this long = lost")
    frame_width: int | None = Field(None, ge=1, description="cameras: requested capture width")
    frame_height: int | None = Field(None, ge=1, description="cameras: requested capture height")


class LineScanConfig(_Section):
    tile_height: int | None = Field(None, ge=1, description="rows per tile along the strip; default: model input")
    tile_width: int | None = Field(None, ge=1, description="tile width across the strip; default: model input")
    overlap_px: int = Field(32, ge=0, description="rows shared by successive tiles, so no defect is cut in two")
    across: Literal["resize", "split"] = Field(
        "resize", description="lines wider or narrower than the tile: resize them, or split into overlapping tiles")


class ReconnectConfig(_Section):
    initial_s: Seconds = Field(0.5, description="first wait before reopening a lost source")
    max_s: Seconds = Field(30.0, description="the wait doubles up to this")
    max_attempts: int = Field(0, ge=0, description="give up after this many failed attempts (0: never)")


class StatusConfig(_Section):
    interval_s: Seconds = Field(5.0, description="period of status events (the heartbeat)")


class MetricsConfig(_Section):
    port: int | None = Field(None, ge=0, le=65535,
                             description="serve Prometheus metrics on this port (0: any free port; none: off)")
    host: str = Field("127.0.0.1", description="address the metrics server binds")


class SaveConfig(_Section):
    dir: Path | None = Field(None, description="save frames with defects here (none: off)")
    what: Literal["annotated", "crops"] = Field("annotated", description="annotated: whole frame with outlines")
    only_defects: bool = Field(True, description="skip frames without defects")
    max_files: int = Field(10000, ge=1, description="stop saving after this many files (disk safety)")


class ReloadConfig(_Section):
    enabled: bool = Field(True, description="reload the model when its file changes (validated first)")
    poll_s: Seconds = Field(2.0, description="how often to check the model file")


class JournalConfig(_Section):
    enabled: bool = Field(True, description="append every event to a local SQLite journal before sending it")
    path: Path | None = Field(None, description="journal file; default: ~/.local/state/steel-edge/<camera>.journal")
    max_events: int = Field(1_000_000, ge=1, description="retention: keep at most this many events")
    max_age_s: float = Field(7 * 24 * 3600.0, gt=0, description="retention: drop events older than this")
    max_bytes: int = Field(1 << 30, ge=1 << 20, description="retention: keep the journal file under about this size")
    sync: Literal["normal", "full"] = Field(
        "normal", description="normal: survives a killed process; full: also a power loss (fsync per event, slower)")
    replay_endpoint: str | None = Field(
        "auto", description="ROUTER endpoint serving replay requests; auto: the first publish endpoint's port + 3 "
                            "(5555 -> 5558, so daemons on different ports never collide); none: off")
    replay_max_batch: int = Field(1000, ge=1, le=100_000, description="events per replay reply at most")


class JsonlConfig(_Section):
    """The JSON Lines sink: every event, one JSON object a line, beside (or instead of) ZeroMQ."""

    path: Path | None = Field(None, description="write events to this file (none: off); rotated files get .1, .2, ...")
    max_bytes: int = Field(64 << 20, ge=4096, description="rotate when the file would grow past this size")
    keep: int = Field(10, ge=0, description="rotated files kept (the oldest beyond this is deleted)")
    fsync: Literal["never", "rotate", "every"] = Field(
        "rotate", description="never: the OS decides (each line is still written through at once); rotate: fsync "
                              "when a file is rotated or closed; every: fsync each event (power-loss safe, slower)")
    kinds: tuple[Literal["result", "status", "error", "eos"], ...] = Field(
        ("result", "error", "eos"), min_length=1, description="which event kinds to write")


class SecurityConfig(_Section):
    curve_secret_key: Path | None = Field(
        None, description="the daemon's CURVE secret key file (steel-edge keys); set = encrypt and authenticate")
    curve_allowed_clients: Path | None = Field(
        None, description="folder of subscriber public key files allowed to connect (required with CURVE)")
    model_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="refuse to start (and to reload) a model with another sha256")


class EdgeConfig(_Section):
    """Everything ``steel-edge`` reads; ``configs/edge.yaml`` documents each key."""

    config_version: Literal[1] = Field(1, description="format version of this file")
    camera: CameraId = Field("cam0", description="camera id in every event and topic")
    source: str | None = Field(None, min_length=1, description="source string; --source overrides")
    model: Path | None = Field(None, description="ONNX model; default: the bundled model")
    once: bool = Field(False, description="folder sources: process what is there, publish eos, exit")
    postprocess: PostprocessParams | None = Field(
        None, description="replace the model's tuned post-processing (all fields, per class)")
    publish: PublishConfig = PublishConfig()
    pipeline: PipelineConfig = PipelineConfig()
    inference: InferenceConfig = InferenceConfig()
    folder: FolderConfig = FolderConfig()
    live: LiveConfig = LiveConfig()
    linescan: LineScanConfig = LineScanConfig()
    reconnect: ReconnectConfig = ReconnectConfig()
    status: StatusConfig = StatusConfig()
    metrics: MetricsConfig = MetricsConfig()
    save: SaveConfig = SaveConfig()
    reload: ReloadConfig = ReloadConfig()
    journal: JournalConfig = JournalConfig()
    jsonl: JsonlConfig = JsonlConfig()
    security: SecurityConfig = SecurityConfig()

