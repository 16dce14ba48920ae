"""CurveZMQ encryption and authentication for the event stream, key generation, and permission checks.

Threat model
------------
By default the daemon binds to loopback, so only processes on the camera PC can subscribe; nothing
is encrypted because nothing leaves the machine. Once events go over a plant network, anyone on that
network could (a) read defect events, (b) subscribe without being asked, or (c) run a fake publisher
and inject events (a forged "no defects" stream is the dangerous one). CURVE (CurveZMQ, elliptic
curve Curve25519 handshake, then authenticated encryption) answers all three:

* **Encryption**: every frame after the handshake is encrypted and authenticated; a sniffer sees
  ciphertext and a tampered frame is dropped.
* **Server authentication**: each subscriber pins the daemon's *public* key (``daemon.key``). A
  forged publisher without the daemon's *secret* key cannot complete the handshake with a pinned
  subscriber, so it cannot deliver a single event to it.
* **Client authentication**: the daemon only accepts subscribers whose public key file is in the
  allow-list folder (``security.curve_allowed_clients``). Every handshake is checked by a ZAP handler
  (``zmq.auth.thread.ThreadAuthenticator``); an unlisted or plain (non-CURVE) subscriber is rejected
  during the handshake and receives nothing, not even the first event.

What CURVE does not cover: a compromised camera PC (the secret key is on it), and denial of service
by flooding the port. Keys are files; their protection is file permissions, which
:func:`permission_warnings` checks so a world-readable secret is reported at start-up, not found in
an audit.

No Python object serialisation of any kind: events are JSON (see ``events.py``), models are ONNX,
configs are parsed with ``yaml.SafeLoader``; ``tests/test_security.py::test_no_pickle_anywhere``
keeps it that way, because unpickling data from a socket or a file is arbitrary code execution.

Key layout (``steel-edge keys DIR --client line1-hmi``)
---------------------------------------------------------
::

    DIR/daemon.key                  daemon public key   -> copy to every subscriber host
    DIR/daemon.key_secret           daemon secret key   -> stays on the camera PC (0600)
    DIR/clients/line1-hmi.key       subscriber public   -> the allow-list folder, public keys only
    DIR/private/line1-hmi.key_secret  subscriber secret -> copy to that subscriber host only (0600)

``clients/`` is exactly what ``security.curve_allowed_clients`` points at; secrets live elsewhere so
the allow-list folder can be copied, reviewed and diffed without leaking anything.

Where CURVE applies (bind side is the server)
---------------------------------------------
A CURVE *server* is a property of the socket that binds and accepts handshakes; the connecting side
is the *client*. When the daemon's XPUB binds (the default), :class:`CurveServer` is applied to it and
subscribers use :func:`apply_client_curve`. When the daemon's publisher connects to a proxy (endpoint
prefixed ``>``), the daemon cannot be the CURVE server on that socket; instead the proxy's backend
XPUB (which subscribers connect to) is the CURVE server with its own keypair and allow-list, built
with the same :class:`CurveServer`, and subscribers pin the *proxy's* public key. The hop from the
daemon to the proxy's XSUB is then either loopback (same host) or needs the proxy's frontend to be a
second CURVE server with the daemon as an allow-listed client.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import zmq
from zmq.utils import z85

if TYPE_CHECKING:
    from zmq.auth.thread import ThreadAuthenticator

# zmq.auth (and through it asyncio) is imported where a key is loaded or the ZAP thread starts: a daemon
# without CURVE never pays for them at start.

__all__ = [
    "CurveServer",
    "SecurityError",
    "apply_client_curve",
    "generate_keypair",
    "load_public_key",
    "load_secret_key",
    "permission_warnings",
]

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_Z85_KEY_LEN = 40  # a 32-byte Curve25519 key in Z85

# Same banners and layout as zmq.auth.create_certificates, so zmq.auth.load_certificate and czmq
# tools read these files; written by hand only to control the file mode and O_EXCL.
_PUBLIC_BANNER = """#   ****  Generated on {now} by steel-edge keys  ****
#   ZeroMQ CURVE Public Certificate
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange.

"""
_SECRET_BANNER = """#   ****  Generated on {now} by steel-edge keys  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""


class SecurityError(ValueError):
    """A key, allow-list or libzmq capability problem; the message names the file at fault."""


def _require_curve() -> None:
    # Without libsodium/tweetnacl, libzmq accepts the curve_* options only to fail at handshake
    # time, which would look like "the network is down"; fail at start-up instead.
    if not zmq.has("curve"):
        raise SecurityError(
            f"this libzmq ({zmq.zmq_version()}) was built without CURVE support; "
            "install a pyzmq wheel (bundles libsodium) or a libzmq built with libsodium")


def _valid_z85_key(key: bytes | None) -> bool:
    if key is None or len(key) != _Z85_KEY_LEN:
        return False
    try:
        z85.decode(key)
    except (ValueError, KeyError):
        return False
    return True


def _load(path: Path) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise SecurityError(f"{path}: key file not found")
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"{path}: not a ZeroMQ CURVE certificate ({exc})") from exc
    if not _valid_z85_key(public):
        raise SecurityError(f"{path}: public-key is not a 40-character Z85 CURVE key")
    if secret is not None and not _valid_z85_key(secret):
        raise SecurityError(f"{path}: secret-key is not a 40-character Z85 CURVE key")
    return public, secret


def load_public_key(path: Path) -> bytes:
    """The Z85 public key in a ``.key`` (or ``.key_secret``) certificate file."""
    return _load(path)[0]


def load_secret_key(path: Path) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a ``.key_secret`` file; a public-only file is a clear error."""
    public, secret = _load(path)
    if secret is None:
        raise SecurityError(
            f"{path}: holds only a public key; a secret key file (*{SECRET_SUFFIX}) is needed here")
    return public, secret


# --------------------------------------------------------------------------------------------------
# key generation


def _write_new(path: Path, text: str, mode: int, force: bool) -> None:
    if force and (path.exists() or path.is_symlink()):
        path.unlink()
    # O_EXCL: never overwrite, never follow a planted symlink; the mode is set at creation, so the
    # secret is not world-readable even for the moment between open() and a later chmod.
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)  # the umask may have removed bits we want (e.g. 0644 under umask 077)


def _check_name(name: str) -> None:
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise SecurityError(f"invalid key name {name!r}: use a plain file name such as 'line1-hmi'")


def _write_pair(public_path: Path, secret_path: Path, force: bool) -> None:
    if not force:
        for path in (public_path, secret_path):
            if path.exists() or path.is_symlink():
                raise FileExistsError(f"{path} exists; use --force to replace it")
    public, secret = zmq.curve_keypair()
    now = datetime.datetime.now().isoformat(timespec="seconds")
    pub_z85, sec_z85 = public.decode("ascii"), secret.decode("ascii")
    curve = f'metadata\ncurve\n    public-key = "{pub_z85}"\n'
    # The secret first: a crash in between leaves a secret without a public file, never a public
    # key that nothing can answer for.
    _write_new(secret_path, _SECRET_BANNER.format(now=now) + curve + f'    secret-key = "{sec_z85}"\n',
               0o600, force)
    _write_new(public_path, _PUBLIC_BANNER.format(now=now) + curve, 0o644, force)


def generate_keypair(folder: Path, name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``folder/name.key`` (public, 0644) and ``folder/name.key_secret`` (0600).

    Returns ``(public_path, secret_path)``. Refuses (``FileExistsError``) to replace either file
    unless ``force``: replacing a key silently locks out every peer that pinned the old one. The
    folder is created with mode 0700.
    """
    _require_curve()
    _check_name(name)
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_path, secret_path = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    _write_pair(public_path, secret_path, force)
    return public_path, secret_path
# --------------------------------------------------------------------------------------------------
# permission checks


def _is_secret_file(path: Path) -> bool:
    if path.name.endswith(SECRET_SUFFIX):
        return True
    try:
        with path.open("rb") as fh:
            return b"secret-key" in fh.read(65536)
    except OSError:
        return False


def permission_warnings(*paths: Path) -> list[str]:
    """Warnings (not errors: the operator decides) for paths other users could read or change.

    * secret key files (``*.key_secret`` or containing ``secret-key``): any group/other bit
      (``mode & 0o077``): a readable secret lets anyone impersonate the daemon or a subscriber.
    * other files (config, public keys): writable by group/others (``mode & 0o022``): whoever can
      edit the config can switch CURVE off or point it at their own keys. A world-readable config
      is normal (it holds paths, not keys) and is not reported, so warnings stay worth reading.
    * folders (the allow-list): writable by group/others: someone could add their own key.

    Missing paths are skipped (the loaders report those as errors). Not meaningful on Windows.
    """
    messages: list[str] = []
    for raw in paths:
        path = Path(raw)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if path.is_dir():
            if mode & 0o022:
                messages.append(f"{path} is writable by other users (mode {mode:04o}), who could add a "
                                f"key to it; run chmod go-w {path}")
        elif _is_secret_file(path):
            if mode & 0o077:
                access = "readable" if mode & 0o044 else "writable" if mode & 0o022 else "accessible"
                messages.append(f"{path} is {access} by other users (mode {mode:04o}); run chmod 600 {path}")
        elif mode & 0o022:
            messages.append(f"{path} is writable by other users (mode {mode:04o}); run chmod go-w {path}")
    return messages


# --------------------------------------------------------------------------------------------------
# sockets


def _allowed_keys(folder: Path) -> dict[bytes, bool]:
    folder = Path(folder)
    if not folder.is_dir():
        raise SecurityError(f"{folder}: allowed-clients folder not found")
    keys: dict[bytes, bool] = {}
    for path in sorted(folder.glob(f"*{PUBLIC_SUFFIX}")):
        keys[load_public_key(path)] = True
    if not keys:
        # An empty allow-list would refuse everyone; almost certainly the wrong folder.
        raise SecurityError(f"{folder}: no *{PUBLIC_SUFFIX} public key files (the allow-list is empty)")
    return keys


class CurveServer:
    """The bind side of a CURVE connection: the daemon's XPUB, or the proxy's backend.

    One per ``zmq.Context``: libzmq routes every ZAP request of a context to the one handler bound
    at ``inproc://zeromq.zap.01``. Usage: ``start()``, then ``apply(socket)`` before ``bind``; on
    shutdown close the sockets, then ``stop()``. Errors in the key files surface in ``__init__`` so a
    misconfigured daemon fails at start-up, not at the first subscriber.
    """

    def __init__(self, context: zmq.Context, secret_key_file: Path, allowed_clients: Path) -> None:
        _require_curve()
        self.context = context
        self.secret_key_file = Path(secret_key_file)
        self.allowed_clients = Path(allowed_clients)
        self.public_key, self._secret_key = load_secret_key(self.secret_key_file)
        self.allowed: dict[bytes, bool] = _allowed_keys(self.allowed_clients)
        self._auth: ThreadAuthenticator | None = None

    def warnings(self) -> list[str]:
        """Permission problems of this server's key files, for the caller to log at start-up."""
        messages = permission_warnings(self.secret_key_file, self.allowed_clients)
        # The daemon never reads these (it globs *.key), but a client secret in the allow-list
        # folder travels wherever that folder is copied.
        messages.extend(f"{secret} is a secret key inside the folder of allowed public keys; move it out"
                        for secret in sorted(self.allowed_clients.glob(f"*{SECRET_SUFFIX}")))
        return messages

    def start(self) -> None:
        """Start the ZAP handler thread that checks each client key against the allow-list."""
        if self._auth is not None:
            return
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(self.context)
        auth.start()
        self._auth = auth
        self._configure()

    def _configure(self) -> None:
        assert self._auth is not None
        # configure_curve only logs a folder it cannot read (and then allows nobody); the folder was
        # validated by _allowed_keys, and the same key set is installed, so there is no silent gap.
        self._auth.configure_curve(domain="*", location=str(self.allowed_clients))
        self._auth.certs["*"] = dict(self.allowed)

    def reload(self) -> int:
        """Re-read the allow-list (key rotation, a client added or revoked); returns the key count.

        A folder that became unreadable or empty raises ``SecurityError`` and the previous list stays
        in force, rather than locking everyone out. Existing connections are not dropped: a revoked
        subscriber keeps its session until it reconnects (restart the daemon to cut it off now).
        """
        self.allowed = _allowed_keys(self.allowed_clients)
        if self._auth is not None:
            self._configure()
        return len(self.allowed)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server; call before ``bind``.

        Refused before ``start()``: a CURVE server without a ZAP handler encrypts but accepts any
        client key, which would look secure and is not.
        """
        if self._auth is None:
            raise SecurityError("CurveServer.apply() before start(): without the ZAP handler any client "
                                "key would be accepted")
        socket.setsockopt(zmq.CURVE_SECRETKEY, self._secret_key)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self.public_key)
        socket.setsockopt(zmq.CURVE_SERVER, 1)

    def stop(self) -> None:
        """Stop the ZAP handler; close the CURVE sockets first (new handshakes would then hang)."""
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def __enter__(self) -> CurveServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def apply_client_curve(socket: zmq.Socket, server_public_key_file: Path, client_secret_key_file: Path) -> None:
    """Make ``socket`` (a SUB, or the proxy's XSUB) a CURVE client pinned to the server's public key.

    Call before ``connect``. The server key file must be the *public* file: a secret key on a
    subscriber host means the daemon's identity has leaked, so it is refused rather than used.
    """
    _require_curve()
    server_public, server_secret = _load(Path(server_public_key_file))
    if server_secret is not None:
        raise SecurityError(f"{server_public_key_file}: holds the server's SECRET key; give subscribers the "
                            f"public *{PUBLIC_SUFFIX} file and keep the secret on the server")
    public, secret = load_secret_key(Path(client_secret_key_file))
    socket.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, secret)
