"""The sink seam: what every output of the daemon offers, and the message it is handed.

Sequencing happens once, before any sink (``steel_edge.sinks.sequencer``): every sink sees the same
``seq``, ``publisher`` and ``event_id`` for an event, because the event is built, numbered and journalled
before the fan-out hands it on. A sink only delivers. It must not raise for a peer that is away (count it
and report it in ``health``); an exception out of ``send`` is counted by the fan-out as that sink's error
and the other sinks still get the event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from steel_edge.events import AnyEvent


@dataclass(frozen=True)
class Outgoing:
    """One numbered event as it goes out: the model, and the wire bytes every sink shares."""

    event: AnyEvent
    topic: bytes
    payload: bytes  # the JSON, exactly as ZeroMQ sends it and the journal stores it
    crop: bytes | None = None


@dataclass(frozen=True)
class SinkHealth:
    """What a sink says about itself in status events, metrics and ``/readyz``."""

    name: str
    connected: bool  # able to deliver now (bound socket, open file, connected client)
    sent: int = 0
    errors: int = 0
    queued: int = 0  # events accepted but not yet delivered
    detail: dict[str, int | str] = field(default_factory=dict)


@runtime_checkable
class Sink(Protocol):
    name: str

    def start(self) -> None:
        """Called once, before the first event (servers start their threads here)."""

    def send(self, out: Outgoing) -> None:
        """Deliver one event (its optional crop included where the sink carries crops)."""

    def flush(self) -> None:
        """Push out whatever is buffered (at end of stream)."""

    def close(self) -> None:
        """Flush and release everything; called once."""

    def health(self) -> SinkHealth: ...
