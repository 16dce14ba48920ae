"""The daemon's default endpoints and how the replay endpoint follows the publish one.

Light on purpose (no OpenCV): ``steel-edge subscribe --resume`` derives the replay endpoint the same way
the daemon does, so a subscriber given only the publish endpoint finds the journal of that daemon.
"""

from __future__ import annotations

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
REPLAY_PORT_OFFSET = 3  # 5555 -> 5558; a proxy's default pair 5556/5557 sits between them


def replay_endpoint_for(endpoint: str) -> str:
    """The replay endpoint that goes with a publish endpoint: its port + 3 (tcp; ``*`` stays ``*``), or the
    same name with ``-replay`` (ipc, inproc). A connect endpoint (``>`` to a proxy) gives a loopback one."""
    bare = endpoint.lstrip("@>")
    scheme, _, rest = bare.partition("://")
    if scheme != "tcp":
        return f"{scheme}://{rest}-replay"
    host, _, port = rest.rpartition(":")
    if endpoint.startswith(">"):
        host = "127.0.0.1"
    return f"tcp://{host}:{int(port) + REPLAY_PORT_OFFSET}" if port.isdigit() else f"tcp://{host}:*"
