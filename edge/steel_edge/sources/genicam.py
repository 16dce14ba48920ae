"""``genicam:CTI_FILE[#ID]``: an industrial (GigE Vision / USB3 Vision) camera through ``harvesters``.

Line cameras on steel lines are usually GenICam devices, reached through the vendor's GenTL producer
(a ``.cti`` file) rather than V4L2. ``harvesters`` is an optional extra (``pip install harvesters``),
imported only when such a source is opened so the edge runs without it. ``ID`` picks a camera by serial
number, device id or user-defined name; without it the first camera found is used.

The adapter is thin: ``fetch(timeout)`` a buffer, copy its first image component out as gray uint8
(``to_gray_genicam``), hand the buffer back. A fetch timeout is "no frame yet" (``None``); any other
failure is ``SourceLost`` and the daemon reconnects. Untested against hardware in CI: only the missing
package and the pixel conversion are.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from steel_edge.config import LiveConfig
from steel_edge.events import utcnow
from steel_edge.sources.base import Frame, FrameError, SourceError, SourceLost
from steel_edge.sources.opencv import open_stamp

_MONO_BITS = {"Mono8": 8, "Mono10": 10, "Mono12": 12, "Mono14": 14, "Mono16": 16}
_COLOR = {"RGB8": cv2.COLOR_RGB2GRAY, "BGR8": cv2.COLOR_BGR2GRAY,
          "RGBa8": cv2.COLOR_RGBA2GRAY, "BGRa8": cv2.COLOR_BGRA2GRAY}


def to_gray_genicam(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """One buffer component's flat pixel data as an (height, width) uint8 gray image (a copy).

    Mono8 is taken as is; Mono10-16 (unpacked, one uint16 per pixel) are shifted down to their top 8
    bits; RGB8/BGR8 (and their alpha variants) are converted. Other formats (packed, Bayer) raise
    ``FrameError``: set the camera to Mono8, which is also the cheapest for a gray model.
    """
    if pixel_format in _MONO_BITS:
        bits = _MONO_BITS[pixel_format]
        pixels = np.asarray(data).reshape(height, width)
        if bits == 8:
            return np.array(pixels, dtype=np.uint8, copy=True)
        return (pixels.astype(np.uint16) >> (bits - 8)).astype(np.uint8)
    if pixel_format in _COLOR:
        channels = 4 if pixel_format.endswith("a8") else 3
        pixels = np.ascontiguousarray(np.asarray(data, dtype=np.uint8).reshape(height, width, channels))
        return np.asarray(cv2.cvtColor(pixels, _COLOR[pixel_format]))
    raise FrameError(f"genicam pixel format {pixel_format!r} is not supported; set the camera to Mono8",
                     kind="decode")


class GenICamSource:
    """A GenICam camera through ``harvesters`` (module docstring)."""

    live = True

    def __init__(self, spec: str, target: str, live: LiveConfig) -> None:
        self.spec = spec
        cti, _, ident = target.partition("#")
        self.cti = Path(cti)
        self.ident = ident or None
        self.config = live
        self._harvester: Any = None
        self._acquirer: Any = None
        self._stamp = ""
        self._n = 0

    def open(self) -> None:
        self.close()
        try:
            # optional extra, imported by name when used (no stubs, and absent from most installs)
            harvesters_core = importlib.import_module("harvesters.core")
        except ImportError as exc:
            raise SourceError(f"{self.spec}: genicam: install the `genicam` extra (pip install harvesters) to "
                              "use GenICam cameras") from exc
        if not self.cti.is_file():
            raise SourceError(f"{self.spec}: GenTL producer {self.cti} not found (the camera vendor's .cti file)")
        harvester = harvesters_core.Harvester()
        self._harvester = harvester
        try:
            harvester.add_file(str(self.cti))
            harvester.update()
            infos = list(harvester.device_info_list)
            index = self._pick(infos)
            create = getattr(harvester, "create", None) or harvester.create_image_acquirer
            self._acquirer = create(index)
            start = getattr(self._acquirer, "start", None) or self._acquirer.start_acquisition
            start()
        except SourceLost:
            self.close()
            raise
        except Exception as exc:  # harvesters/GenTL raise their own types: all mean "not usable now"
            self.close()
            raise SourceLost(f"{self.spec}: {type(exc).__name__}: {exc}") from exc
        self._stamp = open_stamp()
        self._n = 0

    def _pick(self, infos: list[Any]) -> int:
        """The index of the camera named by ``ident`` (or the first), ``SourceLost`` when absent."""
        if not infos:
            raise SourceLost(f"{self.spec}: no GenICam camera found through {self.cti}")
        if self.ident is None:
            return 0
        for i, info in enumerate(infos):
            names = {str(getattr(info, key, "")) for key in ("serial_number", "id_", "user_defined_name")}
            if self.ident in names:
                return i
        found = ", ".join(str(getattr(info, "serial_number", "?")) for info in infos)
        raise SourceLost(f"{self.spec}: camera {self.ident!r} not found (serial numbers seen: {found})")

    def read(self, timeout: float) -> Frame | None:
        if self._acquirer is None:
            raise SourceLost(f"{self.spec}: read before open()")
        try:
            with self._acquirer.fetch(timeout=timeout) as buffer:
                component = buffer.payload.components[0]
                image = to_gray_genicam(component.data, int(component.width), int(component.height),
                                        str(component.data_format))
        except FrameError:
            raise
        except Exception as exc:
            if "Timeout" in type(exc).__name__:  # genicam.gentl.TimeoutException: no frame yet
                return None
            raise SourceLost(f"{self.spec}: {type(exc).__name__}: {exc}") from exc
        frame = Frame(image, f"{self._stamp}-{self._n:09d}", time.monotonic(), utcnow())
        self._n += 1
        return frame

    def close(self) -> None:
        acquirer, harvester = self._acquirer, self._harvester
        self._acquirer = self._harvester = None
        for obj, names in ((acquirer, ("stop", "stop_acquisition")), (acquirer, ("destroy",)),
                           (harvester, ("reset",))):
            method = next((getattr(obj, n) for n in names if obj is not None and hasattr(obj, n)), None)
            if method is not None:
                with contextlib.suppress(Exception):  # closing a lost camera may fail too; nothing to do
                    method()
