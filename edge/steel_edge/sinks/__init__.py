"""Where events go (docs/design.md, "Sinks").

``Sequencer`` numbers and journals each event once; ``FanOut`` hands it to every configured sink. A sink
is one module here plus one config block: ``zeromq`` (``publish``, ``journal.replay_endpoint``,
``security``; always on) and ``jsonl`` (``jsonl.path``). ``build_sinks`` is the one place that reads
the config to decide which sinks run.
"""

from __future__ import annotations

from steel_edge.config import EdgeConfig
from steel_edge.journal import Journal
from steel_edge.sinks.base import Outgoing, Sink, SinkHealth
from steel_edge.sinks.jsonl import JsonlSink
from steel_edge.sinks.sequencer import FanOut, Sequencer
from steel_edge.sinks.zeromq import ZmqSink


def build_sinks(cfg: EdgeConfig, journal: Journal | None) -> list[Sink]:
    """The sinks the config asks for, opened; on a failure the ones already opened are closed again."""
    sinks: list[Sink] = []
    try:
        sinks.append(ZmqSink(cfg, journal))
        if cfg.jsonl.path is not None:
            sinks.append(JsonlSink(cfg.jsonl))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


__all__ = ["FanOut", "JsonlSink", "Outgoing", "Sequencer", "Sink", "SinkHealth", "ZmqSink", "build_sinks"]
