"""Numbering and fan-out: every event gets its ``seq`` and ``publisher`` here, once, then goes to each sink.

``Sequencer`` owns the publisher id and the next ``seq``; with a journal both continue the journal's
(``steel_edge.journal``), and each event is appended to the journal *before* any sink sees it, so
whatever any sink delivered, replay can give again. ``FanOut`` hands the numbered event to every sink in
order; one sink's failure is counted against it and logged, and never keeps the event from the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from steel_edge.events import AnyEvent, encode, new_publisher_id, topic_of
from steel_edge.journal import Journal
from steel_edge.sinks.base import Outgoing, Sink, SinkHealth

log = logging.getLogger("steel_edge.sinks")


class Sequencer:
    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal
        self.publisher_id = journal.publisher_id if journal is not None else new_publisher_id()
        self._seq = journal.next_seq if journal is not None else 0
        self.run_start_seq = self._seq  # the first seq of this run: a subscriber that saw less missed the start
        self.last_seq: int | None = None

    def next_seq(self) -> int:
        """The seq the next event must carry: events are built with it, then ``commit``-ted in that order."""
        return self._seq

    def commit(self, event: AnyEvent, crop: bytes | None = None) -> Outgoing:
        """Number-check, encode and journal one event; the result is what every sink is handed."""
        if event.seq != self._seq:
            raise ValueError(f"event seq {event.seq} is not the next seq {self._seq}")
        out = Outgoing(event, topic_of(event), encode(event), crop)
        if self.journal is not None:
            # first the journal, then any sink: whatever a sink delivered, replay can give again
            self.journal.append(self._seq, out.topic, out.payload, crop)
        self.last_seq = self._seq
        self._seq += 1
        return out


class FanOut:
    """The configured sinks, fed in order; per-sink failures are counted, never propagated."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        if not sinks:
            raise ValueError("no sink configured: events would go nowhere")
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names repeat: {names}")
        self.sinks = list(sinks)
        self.failures = dict.fromkeys(names, 0)

    def get(self, name: str) -> Sink | None:
        return next((s for s in self.sinks if s.name == name), None)

    def start(self) -> None:
        for sink in self.sinks:
            sink.start()

    def send(self, out: Outgoing) -> None:
        for sink in self.sinks:
            try:
                sink.send(out)
            except Exception as err:  # one sink's trouble must not cost the others the event
                self.failures[sink.name] += 1
                log.warning("sink %s: seq %d not delivered: %s: %s", sink.name, out.event.seq,
                            type(err).__name__, err)

    def flush(self) -> None:
        for sink in self.sinks:
            self._quietly(sink, "flush")

    def close(self) -> None:
        for sink in self.sinks:
            self._quietly(sink, "close")

    def health(self) -> list[SinkHealth]:
        out = []
        for sink in self.sinks:
            h = sink.health()
            failed = self.failures[sink.name]
            out.append(h if not failed else SinkHealth(h.name, h.connected, h.sent, h.errors + failed, h.queued,
                                                        h.detail))
        return out

    def _quietly(self, sink: Sink, what: str) -> None:
        try:
            getattr(sink, what)()
        except Exception:
            log.warning("sink %s: %s failed", sink.name, what, exc_info=True)
