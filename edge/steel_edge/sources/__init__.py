"""Frame sources, each named by one string; ``open_source`` turns the string into a ``Source``.

=====================  ==========================================================  ======
spec                   what                                                        live
=====================  ==========================================================  ======
``camera0``            OpenCV camera by index (V4L2 on Linux)                      yes
``/dev/video0``        OpenCV camera by device path                                yes
``rtsp://...``         network stream (also ``http://``, ``https://``), timeouts   yes
``line.avi``           a video file (any existing file that is not a folder)       no
``folder:DIR``         image files in DIR: batch (``--once``) or watch mode        no
``synth:SEED[:N]``     generated strip frames (demo, tests); ``live.fps`` paces    yes
``linescan:INNER``     rows or short frames from INNER assembled into tiles        INNER's
``genicam:CTI[#ID]``   GenICam camera through ``harvesters`` (optional extra)      yes
=====================  ==========================================================  ======

The protocol and the frame type are in ``steel_edge.sources.base``.
"""

from __future__ import annotations

import re
from pathlib import Path

from steel_edge.config import EdgeConfig
from steel_edge.sources.base import EndOfStream, Frame, FrameError, Source, SourceError, SourceLost

__all__ = ["EndOfStream", "Frame", "FrameError", "Source", "SourceError", "SourceLost", "open_source"]

_CAMERA = re.compile(r"^camera(\d+)$")
_DEVICE = re.compile(r"^/dev/video\d+$")
_SYNTH = re.compile(r"^synth(?::(\d+))?(?::(\d+))?$")


def open_source(spec: str, config: EdgeConfig, tile_size: tuple[int, int], *, exact_size: bool = False,
                model_sha256: str = "") -> Source:
    """The (not yet opened) source named by ``spec``; ``SourceError`` saying what is accepted otherwise.

    ``tile_size`` is the model's (height, width), which line-scan sources assemble tiles to. With
    ``exact_size`` (a model that does not resize) a folder source checks each file's size from its
    header and quarantines a file of another size before decoding it. ``model_sha256`` and the config's
    camera key a folder source's ledger: another model or camera processes the folder again.
    """
    spec = spec.strip()
    if spec.startswith("linescan:"):
        from steel_edge.sources.linescan import LineScanSource

        inner = open_source(spec[len("linescan:"):], config, tile_size, model_sha256=model_sha256)
        return LineScanSource(spec, inner, config.linescan, tile_size)
    if spec.startswith("folder:"):
        from steel_edge.sources.folder import FolderSource

        return FolderSource(spec, Path(spec[len("folder:"):]), config.folder, batch=config.once,
                            expect_size=tile_size if exact_size else None, camera=config.camera,
                            model_sha256=model_sha256)
    if m := _SYNTH.match(spec):
        from steel_edge.sources.synthetic import SynthSource

        seed = int(m.group(1) or 0)
        count = int(m.group(2)) if m.group(2) else None
        return SynthSource(spec, seed, config.live, count=count)
    if spec.startswith("genicam:"):
        from steel_edge.sources.genicam import GenICamSource

        return GenICamSource(spec, spec[len("genicam:"):], config.live)
    if m := _CAMERA.match(spec):
        from steel_edge.sources.opencv import CameraSource

        return CameraSource(spec, int(m.group(1)), config.live)
    if _DEVICE.match(spec):
        from steel_edge.sources.opencv import CameraSource

        return CameraSource(spec, spec, config.live)
    if spec.split("://", 1)[0].lower() in ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp"):
        from steel_edge.sources.opencv import StreamSource

        return StreamSource(spec, spec, config.live)
    path = Path(spec)
    if path.is_dir():
        raise SourceError(f"{spec}: is a folder; name it folder:{spec} to process its image files")
    if path.is_file():
        from steel_edge.sources.opencv import VideoFileSource

        return VideoFileSource(spec, path)
    raise SourceError(
        f"unknown source {spec!r}: expected cameraN, /dev/videoN, rtsp://..., http://..., a video file that "
        "exists, folder:DIR, synth:SEED[:COUNT], linescan:SOURCE or genicam:CTI_FILE")
