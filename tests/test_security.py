"""CURVE encryption/authentication, key generation, permission warnings, and the no-pickle rule.

Every negative socket test runs an authorised subscriber beside the rejected one, so "received zero"
means "was refused" and not "nothing was published yet".
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth

from steel_edge.cli.tools import keys_main
from steel_edge.security import (
    CurveServer,
    SecurityError,
    apply_client_curve,
    generate_keypair,
    permission_warnings,
)

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


@pytest.fixture()
def keys(tmp_path: Path) -> Path:
    """DIR with daemon keys, allowed client 'hmi', and a client 'intruder' that is not allowed."""
    root = tmp_path / "keys"
    assert keys_main([str(root), "--client", "hmi"]) == 0
    # the intruder has a valid keypair, just not in the allow-list folder
    generate_keypair(tmp_path / "elsewhere", "intruder")
    return root


@contextlib.contextmanager
def _curve_pub(keys: Path) -> Iterator[tuple[zmq.Socket, str, CurveServer]]:
    """A CURVE XPUB bound on an ephemeral loopback port; yields (socket, endpoint, authenticator)."""
    ctx = zmq.Context()
    curve = CurveServer(ctx, keys / "daemon.key_secret", keys / "clients")
    curve.start()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 0)
    curve.apply(pub)
    pub.bind("tcp://127.0.0.1:*")
    try:
        yield pub, pub.getsockopt(zmq.LAST_ENDPOINT).decode(), curve
    finally:
        pub.close(linger=0)
        curve.stop()
        ctx.term()


@pytest.fixture()
def server(keys: Path) -> Iterator[tuple[zmq.Socket, str]]:
    with _curve_pub(keys) as (pub, endpoint, _curve):
        yield pub, endpoint


@pytest.fixture()
def client_ctx() -> Iterator[zmq.Context]:
    """A separate context for subscribers, as they would be in another process."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _sub(ctx: zmq.Context, endpoint: str, server_key: Path | None = None, secret: Path | None = None) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    if server_key is not None and secret is not None:
        apply_client_curve(sub, server_key, secret)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    return sub


def _drain(sub: zmq.Socket) -> int:
    count = 0
    while True:
        try:
            sub.recv(zmq.NOBLOCK)
        except zmq.Again:
            return count
        count += 1


def _publish(pub: zmq.Socket, subs: dict[str, zmq.Socket], seconds: float,
             until: str | None = None) -> dict[str, int]:
    """Publish every 10 ms for ``seconds`` (or until ``until`` has received, within ``seconds``)."""
    counts = dict.fromkeys(subs, 0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pub.send(b"defects cam0 {}")
        time.sleep(0.01)
        for name, sub in subs.items():
            counts[name] += _drain(sub)
        if until is not None and counts[until]:
            break
    return counts


# --------------------------------------------------------------------------------------------------
# keys


def test_keys_main_layout_and_modes(keys: Path) -> None:
    assert sorted(p.relative_to(keys).as_posix() for p in keys.rglob("*") if p.is_file()) == [
        "clients/hmi.key", "daemon.key", "daemon.key_secret", "private/hmi.key_secret"]
    for secret in (keys / "daemon.key_secret", keys / "private/hmi.key_secret"):
        assert secret.stat().st_mode & 0o777 == 0o600
    for folder in (keys, keys / "clients", keys / "private"):
        assert folder.stat().st_mode & 0o077 == 0  # umask can only remove bits from 0700
    assert permission_warnings(keys, keys / "clients", keys / "daemon.key_secret",
                               keys / "private/hmi.key_secret") == []


def test_keys_main_prints_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keys_main([str(tmp_path / "k"), "--client", "hmi"]) == 0
    out = capsys.readouterr().out
    assert f"curve_secret_key: {(tmp_path / 'k' / 'daemon.key_secret').resolve()}" in out
    assert f"curve_allowed_clients: {(tmp_path / 'k' / 'clients').resolve()}" in out
    assert "--curve-server-key" in out and "private/hmi.key_secret" in out
    # the printed command runs as shown: it names the daemon's endpoint
    assert "steel-edge subscribe tcp://127.0.0.1:5555 --curve-server-key" in out
    assert keys_main([str(tmp_path / "k2"), "--client", "hmi", "--endpoint", "tcp://10.0.0.5:6000"]) == 0
    assert "steel-edge subscribe tcp://10.0.0.5:6000 --curve-server-key" in capsys.readouterr().out


def test_keys_main_refuses_to_overwrite(keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (keys / "daemon.key_secret").read_bytes()
    capsys.readouterr()
    assert keys_main([str(keys)]) == 2
    assert "daemon.key_secret exists" in capsys.readouterr().err
    assert keys_main([str(keys), "--client", "hmi"]) == 2
    assert "hmi" in capsys.readouterr().err
    assert (keys / "daemon.key_secret").read_bytes() == before
    # adding a client keeps the daemon key every subscriber pinned
    assert keys_main([str(keys), "--client", "scada"]) == 0
    assert (keys / "daemon.key_secret").read_bytes() == before
    assert (keys / "clients/scada.key").is_file()
    # --force replaces
    assert keys_main([str(keys), "--force"]) == 0
    assert (keys / "daemon.key_secret").read_bytes() != before
    assert (keys / "daemon.key_secret").stat().st_mode & 0o777 == 0o600


def test_generate_keypair_refuses_overwrite(tmp_path: Path) -> None:
    pub, sec = generate_keypair(tmp_path / "k", "a")
    with pytest.raises(FileExistsError, match="a.key"):
        generate_keypair(tmp_path / "k", "a")
    pub2, sec2 = generate_keypair(tmp_path / "k", "a", force=True)
    assert (pub2, sec2) == (pub, sec)


def test_generated_keys_load_with_zmq_auth(keys: Path) -> None:
    public, secret = zmq.auth.load_certificate(keys / "daemon.key_secret")
    assert secret is not None and len(public) == len(secret) == 40
    assert zmq.auth.load_certificate(keys / "daemon.key") == (public, None)
    assert zmq.curve_public(secret) == public
    client_pub, _ = zmq.auth.load_certificate(keys / "private/hmi.key_secret")
    assert zmq.auth.load_certificates(keys / "clients") == {client_pub: True}


# --------------------------------------------------------------------------------------------------
# sockets


@pytest.mark.timeout(30)
def test_authorised_subscriber_receives(server: tuple[zmq.Socket, str], client_ctx: zmq.Context, keys: Path) -> None:
    pub, endpoint = server
    sub = _sub(client_ctx, endpoint, keys / "daemon.key", keys / "private/hmi.key_secret")
    counts = _publish(pub, {"hmi": sub}, seconds=10, until="hmi")
    assert counts["hmi"] > 0


@pytest.mark.timeout(30)
def test_unauthorised_and_plain_subscribers_receive_nothing(
        server: tuple[zmq.Socket, str], client_ctx: zmq.Context, keys: Path, tmp_path: Path) -> None:
    pub, endpoint = server
    subs = {
        "hmi": _sub(client_ctx, endpoint, keys / "daemon.key", keys / "private/hmi.key_secret"),
        "intruder": _sub(client_ctx, endpoint, keys / "daemon.key", tmp_path / "elsewhere/intruder.key_secret"),
        "plain": _sub(client_ctx, endpoint),
    }
    counts = _publish(pub, subs, seconds=1.5)
    assert counts["hmi"] > 0, "control subscriber got nothing: the test proves nothing"
    assert counts["intruder"] == 0
    assert counts["plain"] == 0


@pytest.mark.timeout(30)
def test_forged_publisher_cannot_reach_pinned_subscriber(
        server: tuple[zmq.Socket, str], client_ctx: zmq.Context, keys: Path, tmp_path: Path) -> None:
    real_pub, real_endpoint = server
    # The forger has its own keypair and accepts any client (no ZAP handler in its context).
    forged_pub_key, forged_secret = zmq.curve_keypair()
    forged = client_ctx.socket(zmq.XPUB)
    forged.setsockopt(zmq.LINGER, 0)
    forged.setsockopt(zmq.CURVE_SECRETKEY, forged_secret)
    forged.setsockopt(zmq.CURVE_PUBLICKEY, forged_pub_key)
    forged.setsockopt(zmq.CURVE_SERVER, 1)
    forged.bind("tcp://127.0.0.1:*")
    forged_endpoint = forged.getsockopt(zmq.LAST_ENDPOINT).decode()
    try:
        victim = _sub(client_ctx, forged_endpoint, keys / "daemon.key", keys / "private/hmi.key_secret")
        control = _sub(client_ctx, real_endpoint, keys / "daemon.key", keys / "private/hmi.key_secret")
        counts = dict.fromkeys(("victim", "control"), 0)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            forged.send(b"defects cam0 {\"defects\": []}")
            real_pub.send(b"defects cam0 {}")
            time.sleep(0.01)
            counts["victim"] += _drain(victim)
            counts["control"] += _drain(control)
        assert counts["control"] > 0
        assert counts["victim"] == 0
    finally:
        forged.close(linger=0)


@pytest.mark.timeout(30)
def test_reload_admits_a_new_client(client_ctx: zmq.Context, keys: Path) -> None:
    with _curve_pub(keys) as (pub, endpoint, curve):
        assert keys_main([str(keys), "--client", "late"]) == 0
        assert curve.reload() == 2
        late = _sub(client_ctx, endpoint, keys / "daemon.key", keys / "private/late.key_secret")
        assert _publish(pub, {"late": late}, seconds=10, until="late")["late"] > 0
        (keys / "clients/hmi.key").unlink()
        (keys / "clients/late.key").unlink()
        with pytest.raises(SecurityError, match="allow-list is empty"):
            curve.reload()
        assert len(curve.allowed) == 2  # the previous list stays in force


def test_apply_before_start_is_refused(keys: Path) -> None:
    ctx = zmq.Context()
    try:
        curve = CurveServer(ctx, keys / "daemon.key_secret", keys / "clients")
        sock = ctx.socket(zmq.XPUB)
        with pytest.raises(SecurityError, match="before start"):
            curve.apply(sock)
        sock.close(linger=0)
    finally:
        ctx.term()


# --------------------------------------------------------------------------------------------------
# loading errors


@pytest.mark.parametrize("case", ["missing", "public_for_secret", "garbage", "bad_key"])
def test_bad_secret_key_file_names_the_file(keys: Path, tmp_path: Path, case: str) -> None:
    path = {
        "missing": tmp_path / "nope.key_secret",
        "public_for_secret": keys / "daemon.key",
        "garbage": tmp_path / "garbage.key_secret",
        "bad_key": tmp_path / "short.key_secret",
    }[case]
    if case == "garbage":
        path.write_text("hello\n")
    if case == "bad_key":
        path.write_text('curve\n    public-key = "tooshort"\n    secret-key = "tooshort"\n')
    ctx = zmq.Context()
    try:
        with pytest.raises(SecurityError, match=re.escape(str(path))):
            CurveServer(ctx, path, keys / "clients")
        sock = ctx.socket(zmq.SUB)
        with pytest.raises(SecurityError, match=re.escape(str(path))):
            apply_client_curve(sock, keys / "daemon.key", path)
        sock.close(linger=0)
    finally:
        ctx.term()


def test_allowed_clients_errors_name_the_folder(keys: Path, tmp_path: Path) -> None:
    ctx = zmq.Context()
    try:
        with pytest.raises(SecurityError, match=re.escape(f"{tmp_path / 'absent'}: allowed-clients folder not found")):
            CurveServer(ctx, keys / "daemon.key_secret", tmp_path / "absent")
        (tmp_path / "empty").mkdir()
        with pytest.raises(SecurityError, match="allow-list is empty"):
            CurveServer(ctx, keys / "daemon.key_secret", tmp_path / "empty")
        (keys / "clients/broken.key").write_text("not a key\n")
        with pytest.raises(SecurityError, match=re.escape(str(keys / "clients/broken.key"))):
            CurveServer(ctx, keys / "daemon.key_secret", keys / "clients")
    finally:
        ctx.term()


def test_client_refuses_server_secret_as_server_key(keys: Path) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    try:
        with pytest.raises(SecurityError, match="SECRET key"):
            apply_client_curve(sock, keys / "daemon.key_secret", keys / "private/hmi.key_secret")
    finally:
        sock.close(linger=0)
        ctx.term()


# --------------------------------------------------------------------------------------------------
# permissions


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_permission_warnings(keys: Path, tmp_path: Path) -> None:
    secret = keys / "daemon.key_secret"
    config = tmp_path / "edge.yaml"
    config.write_text("security: {}\n")
    os.chmod(secret, 0o644)
    os.chmod(config, 0o666)
    warnings = permission_warnings(secret, config, tmp_path / "missing.yaml")
    assert warnings[0] == f"{secret} is readable by other users (mode 0644); run chmod 600 {secret}"
    assert str(config) in warnings[1] and "0666" in warnings[1]
    assert len(warnings) == 2
    os.chmod(secret, 0o600)
    os.chmod(config, 0o600)
    assert permission_warnings(secret, config) == []
    os.chmod(keys / "clients", 0o777)
    (folder_warning,) = permission_warnings(keys / "clients")
    assert "could add a key" in folder_warning
    os.chmod(keys / "clients", 0o700)
    os.link(secret, keys / "clients/oops.key_secret")
    ctx = zmq.Context()
    try:
        (warning,) = CurveServer(ctx, secret, keys / "clients").warnings()
        assert "oops.key_secret is a secret key inside the folder of allowed public keys" in warning
    finally:
        ctx.term()


# --------------------------------------------------------------------------------------------------
# no object deserialisation from sockets or files

_FORBIDDEN = re.compile(
    r"\bimport\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b"
    r"|\bfrom\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b"
    r"|\b(c?pickle|joblib|shelve|dill)\.\w"
    r"|\b(recv_pyobj|send_pyobj|read_pickle|to_pickle)\b"
    r"|allow_pickle\s*=\s*True"
    r"|yaml\.(unsafe_load|Loader|UnsafeLoader|FullLoader)\b"
)


def test_no_pickle_anywhere() -> None:
    hits: list[str] = []
    me = Path(__file__).resolve()
    for product in ("edge", "train", "export"):
        for path in sorted((REPO / product).rglob("*.py")):
            if path.resolve() == me:
                continue
            for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if _FORBIDDEN.search(line):
                    hits.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not hits, "object deserialisation is arbitrary code execution; use JSON/ONNX:\n" + "\n".join(hits)


def test_no_pickle_pattern_catches_the_usual_forms() -> None:
    for line in ("import pickle", "from pickle import loads", "x = pickle.loads(b)", "sock.recv_pyobj()",
                 "np.load(p, allow_pickle=True)", "import joblib", "shelve.open(p)",
                 "yaml.load(t, Loader=yaml.Loader)"):
        assert _FORBIDDEN.search(line), line
    for line in ("# no pickle.", "yaml.safe_load(text)", "np.load(p, allow_pickle=False)"):
        assert not _FORBIDDEN.search(line), line
