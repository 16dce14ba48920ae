"""Security through the real daemon: CURVE on the event and replay sockets, model pinning, warnings."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from steel_edge.cli.tools import keys_main
from steel_edge.config import EdgeConfig
from steel_edge.daemon import BUNDLED_MODEL, build_daemon
from steel_edge.events import DefectEvent
from steel_edge.model import ModelContractError
from steel_edge.resume import ReplayClient, ReplayError
from steel_edge.security import apply_client_curve
from steel_edge.subscriber import Subscriber

REPO = Path(__file__).resolve().parent.parent


def _cfg(tmp_path: Path, **extra: object) -> EdgeConfig:
    data: dict[str, object] = {
        "camera": "sec", "source": "synth:6", "live": {"fps": 50}, "reload": {"enabled": False},
        "publish": {"endpoints": ["tcp://127.0.0.1:*"]}, "status": {"interval_s": 0.2},
        "journal": {"path": str(tmp_path / "events.journal"), "replay_endpoint": "tcp://127.0.0.1:*"},
    }
    data.update(extra)
    return EdgeConfig.model_validate(data)


@pytest.mark.timeout(60)
def test_curve_daemon_serves_only_allowed_subscribers(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert keys_main([str(keys), "--client", "hmi", "--client", "intruder"]) == 0
    (keys / "clients" / "intruder.key").unlink()  # generated, then struck off the allow-list
    cfg = _cfg(tmp_path, security={"curve_secret_key": str(keys / "daemon.key_secret"),
                                   "curve_allowed_clients": str(keys / "clients")})
    daemon = build_daemon(cfg)
    assert daemon.replay is not None
    endpoint, replay = daemon.publisher.bound[0], daemon.replay.endpoint

    def as_client(name: str):  # type: ignore[no-untyped-def]
        return lambda sock: apply_client_curve(sock, keys / "daemon.key", keys / "private" / f"{name}.key_secret")

    t = threading.Thread(target=daemon.run, daemon=True)
    with Subscriber(endpoint, secure=as_client("hmi")) as good, \
            Subscriber(endpoint, secure=as_client("intruder")) as bad, Subscriber(endpoint) as plain:
        t.start()
        try:
            got = [good.recv(10) for _ in range(20)]
            assert all(m is not None for m in got)
            assert any(isinstance(m.event, DefectEvent) for m in got if m is not None)
            assert bad.recv(1.0) is None and plain.recv(0.1) is None  # the whole time the daemon published
            authorised = ReplayClient(replay, timeout=5, secure=as_client("hmi"))
            assert authorised.fetch(0).events
            authorised.close()
            refused = ReplayClient(replay, timeout=1, secure=as_client("intruder"))
            with pytest.raises(ReplayError, match="did not answer"):
                refused.fetch(0)
            refused.close()
        finally:
            daemon.stop()
            t.join(timeout=20)
    assert bad.received == 0 and plain.received == 0


def test_a_pinned_model_sha256_refuses_any_other_model(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="pins"):
        build_daemon(_cfg(tmp_path, security={"model_sha256": "0" * 64}))
    import hashlib

    good = hashlib.sha256(BUNDLED_MODEL.read_bytes()).hexdigest()
    d = build_daemon(_cfg(tmp_path, security={"model_sha256": good}))
    d.close()


def test_cli_warns_about_unsafe_permissions_and_refuses_a_bad_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert keys_main([str(keys), "--client", "hmi"]) == 0
    secret = keys / "daemon.key_secret"
    os.chmod(secret, 0o644)
    config = tmp_path / "edge.yaml"
    config.write_text(f"camera: sec\nsecurity:\n  curve_secret_key: {secret}\n"
                      f"  curve_allowed_clients: {keys / 'clients'}\n"
                      f"journal:\n  path: {tmp_path / 'j.journal'}\n  replay_endpoint: tcp://127.0.0.1:*\n")
    os.chmod(config, 0o666)
    r = subprocess.run([sys.executable, "-m", "steel_edge.cli", "--source", "synth:0:3", "--config", str(config),
                        "--publish", "tcp://127.0.0.1:*"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{secret} is readable by other users" in r.stderr and f"{config}" in r.stderr
    r = subprocess.run([sys.executable, "-m", "steel_edge.cli", "--source", "synth:0:3", "--config", str(config),
                        "--publish", "tcp://127.0.0.1:*", "--set", f"security.curve_secret_key={keys / 'daemon.key'}"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1 and "daemon.key" in r.stderr
