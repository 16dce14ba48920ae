"""``steel-edge proxy``: the XSUB/XPUB fan-in between many daemons and many subscribers.

One daemon per camera *connects* its publisher to the proxy's frontend (``--publish '>tcp://host:5556'``),
every subscriber connects to the backend, and libzmq's own proxy forwards messages downstream and
subscriptions upstream, so a subscriber needs one endpoint whatever the number of cameras, and daemons can
come and go. The proxy is content-blind: ``seq`` and ``publisher`` pass through untouched, which is why
subscribers key their gap detection on ``publisher``.

Stopping: ``zmq.proxy_steerable`` blocks in C, so it is stopped through its control socket. ``Proxy.run``
pairs it with an inproc PAIR socket and a small watcher thread that sends ``TERMINATE`` when the caller's
``stop`` event is set. ``proxy_main`` runs the proxy in a worker thread and waits on that event in the main
thread, where Python delivers SIGINT/SIGTERM; then sockets close with an explicit linger before the context
ends (the other order hangs), and the process exits normally.
"""

from __future__ import annotations

import threading
import uuid
from types import TracebackType
from typing import Any, Final

import zmq

DEFAULT_FRONTEND: Final = "tcp://127.0.0.1:5556"
DEFAULT_BACKEND: Final = "tcp://127.0.0.1:5557"
DEFAULT_HWM: Final = 10_000  # per connection; the proxy should not be the first place messages drop
LINGER_MS: Final = 500  # on shutdown, give messages already queued half a second to leave
PROG: Final = "steel-edge proxy"


class Proxy:
    """XSUB frontend (daemons connect) and XPUB backend (subscribers connect), bound on construction.

    Binding happens here, not in ``run``, so the caller learns the real endpoints (``tcp://...:*`` picks a
    free port) and bind errors before starting a thread. ``run`` may then be called from another thread;
    after it returns, ``close`` (or the context manager) releases the sockets.
    """

    def __init__(self, frontend: str = DEFAULT_FRONTEND, backend: str = DEFAULT_BACKEND, *,
                 context: zmq.Context[Any] | None = None, hwm: int = DEFAULT_HWM) -> None:
        self._own_context = context is None
        self._ctx: zmq.Context[Any] = zmq.Context() if context is None else context
        self._front: zmq.Socket[bytes] = self._ctx.socket(zmq.XSUB)
        self._back: zmq.Socket[bytes] = self._ctx.socket(zmq.XPUB)
        self._closed = False
        self._front.setsockopt(zmq.RCVHWM, hwm)
        self._back.setsockopt(zmq.SNDHWM, hwm)
        where = frontend
        try:
            self._front.bind(frontend)
            where = backend
            self._back.bind(backend)
        except zmq.ZMQError as err:
            self.close()
            raise OSError(f"cannot bind {where!r}: {err}") from err
        self.frontend: str = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend: str = self._back.getsockopt_string(zmq.LAST_ENDPOINT)

    def run(self, stop: threading.Event | None = None) -> None:
        """Forward until ``stop`` is set (or forever without one, until the context is terminated)."""
        address = f"inproc://steel-edge-proxy-{uuid.uuid4().hex}"
        control = self._ctx.socket(zmq.PAIR)
        command = self._ctx.socket(zmq.PAIR)
        control.bind(address)
        command.connect(address)
        done = threading.Event()

        def watch(stop: threading.Event) -> None:
            # The only thread that touches ``command`` until it is joined below.
            while not done.is_set():
                if stop.wait(0.1):
                    command.send(b"TERMINATE")
                    return

        watcher = None
        if stop is not None:
            watcher = threading.Thread(target=watch, args=(stop,), name="steel-edge-proxy-stop", daemon=True)
            watcher.start()
        try:
            zmq.proxy_steerable(self._front, self._back, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            done.set()
            if watcher is not None:
                watcher.join()
            command.close(linger=0)
            control.close(linger=0)

    def close(self) -> None:
        """Close both sockets (``LINGER_MS``), then the context if this proxy created it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._front.close(linger=LINGER_MS)
        self._back.close(linger=LINGER_MS)
        if self._own_context:
            self._ctx.term()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def run_proxy(frontend: str = DEFAULT_FRONTEND, backend: str = DEFAULT_BACKEND, *,
              stop: threading.Event | None = None, context: zmq.Context[Any] | None = None,
              hwm: int = DEFAULT_HWM) -> None:
    """Bind, forward until ``stop`` is set, close. ``OSError`` if an endpoint cannot be bound."""
    with Proxy(frontend, backend, context=context, hwm=hwm) as proxy:
        proxy.run(stop)
