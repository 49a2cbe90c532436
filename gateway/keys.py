"""JWT signing keys by `kid`: tokens are signed with the current key and verified with any key still known.

The keys live beside the JWT secret: the secret (GATEWAY_JWT_SECRET, else the data dir's jwt_secret) is the
base key, and `gateway keys rotate` adds keys to the data dir's jwt_keys.json. The newest key signs; the keys
it superseded keep verifying, so the tokens they signed live out their lifetime. A rotate also retires the
keys whose last token has expired (superseded more than a token lifetime ago), and `gateway keys retire`
retires one at once (a leaked key): a token whose kid is retired or unknown is refused. Tokens issued before
keys had ids carry no kid; they are the base key's, and verify with it while it is not retired.

Running workers see a rotate or a retire within RELOAD_SECONDS: the file is looked at (a stat) at most that
often, and read again only when it changed. Hosts that do not share the data dir need the file copied, as
they need the same secret today.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import itertools
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

from .config import MIN_SECRET_BYTES, ConfigError, Settings
from .logging import get_logger

log = get_logger()

KEYS_FILE = "jwt_keys.json"
RELOAD_SECONDS = 1.0


def base_kid(secret: str) -> str:
    """The base secret's kid: derived from it (an HMAC, which says nothing of the secret), so that every
    worker and host with the same secret names it alike."""
    return "b" + hmac.new(secret.encode(), b"gateway signing key id", hashlib.sha256).hexdigest()[:15]


class BadHeader(ValueError):
    """A token whose header is not a JSON object in base64url, or whose kid is not a string."""


def token_kid(token: str) -> str | None:
    """The kid in a token's header, read without verifying anything (the signature is checked next, with the
    key it names). Read here rather than with jwt.get_unverified_header, which decodes the whole token and
    costs ten times as much, on every request."""
    head = token.partition(".")[0]
    try:
        header = msgspec.json.decode(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadHeader() from None
    kid = header.get("kid") if isinstance(header, dict) else None
    if not isinstance(header, dict) or not (kid is None or isinstance(kid, str)):
        raise BadHeader()
    return kid


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object, path: Path | None) -> dt.datetime:
    try:
        return dt.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ConfigError(f"{path}: {value!r} is not a time yyyy-mm-ddThh:mm:ssZ") from None


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: str  # "" once retired: a retired key's secret is not kept
    created: dt.datetime | None  # None: the base key (the JWT secret)
    superseded: dt.datetime | None = None  # when a newer key became the current one
    retired: dt.datetime | None = None


@dataclass(frozen=True)
class KeySet:
    keys: tuple[SigningKey, ...]  # oldest first, the base key first of all; the last is the current one
    base: str  # the base key's kid, which tokens without a kid are verified with

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def verifying(self, kid: str | None) -> SigningKey | None:
        """The key a token with this kid (None: no kid) verifies with, unless it is unknown or retired."""
        wanted = self.base if kid is None else kid
        for key in self.keys:
            if key.kid == wanted:
                return None if key.retired else key
        return None


def read_keys(base_secret: str, path: Path | None) -> KeySet:
    """The base key, then the keys of `path` (when it exists) by age, each superseded by the next."""
    base = SigningKey(base_kid(base_secret), base_secret, None)
    entries: list[dict] = []
    retired: dict[str, dt.datetime] = {}
    if path is not None:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            doc = {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} cannot be read: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys", []), list):
            raise ConfigError(f"{path}: expected an object with a list `keys`")
        entries = doc.get("keys", [])
        retired = {str(k): _parse_time(v, path) for k, v in (doc.get("retired") or {}).items()}
    keys = [base]
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            raise ConfigError(f"{path}: each key needs a kid, a secret and its creation time")
        secret = entry.get("secret") or ""
        if entry["kid"] not in retired and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"{path}: key {entry['kid']} holds a secret shorter than {MIN_SECRET_BYTES} bytes")
        keys.append(SigningKey(entry["kid"], secret, _parse_time(entry.get("created"), path)))
    chained = [replace(key, superseded=after.created, retired=retired.get(key.kid))
               for key, after in itertools.pairwise(keys)]
    last = keys[-1]
    if last.kid in retired:
        raise ConfigError(f"{path}: the current key {last.kid} is retired; rotate to a new one")
    return KeySet((*chained, last), base.kid)


class KeyRing:
    """The keys a worker signs and verifies with, read again when the keys file changes."""

    def __init__(self, base_secret: str, path: Path | None = None) -> None:
        self._base = base_secret
        self._path = path
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self.keys = read_keys(base_secret, path)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self._path is None:
            return None
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def current(self) -> KeySet:
        """The keys, looked at again when RELOAD_SECONDS have passed (or at once, with force)."""
        now = time.monotonic()
        if self._path is not None and now - self._checked >= RELOAD_SECONDS:
            self._checked = now
            stamp = self._file_stamp()
            if stamp != self._stamp:
                try:
                    self.keys = read_keys(self._base, self._path)
                except ConfigError as exc:  # a running gateway keeps the keys it has rather than stop
                    log.error("signing_keys_unreadable", error=str(exc))
                else:
                    log.info("signing_keys_loaded", current=self.keys.current.kid, keys=len(self.keys.keys))
                self._stamp = stamp
        return self.keys

    def lookup(self, kid: str | None) -> SigningKey | None:
        key = self.current().verifying(kid)
        if key is None and self._path is not None:
            # A kid this worker has not seen may be one a rotate made in the last second.
            self._checked = 0.0
            key = self.current().verifying(kid)
        return key


def keys_path(settings: Settings) -> Path:
    return settings.data_dir / KEYS_FILE


def key_ring(settings: Settings) -> KeyRing:
    return KeyRing(settings.resolved_secret(), keys_path(settings))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One rotate or retire at a time on this data dir (concurrent ones would lose each other's key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, keys: KeySet) -> None:
    """The file as a whole, replaced at once (a worker never reads half of it), readable by its owner only."""
    doc = {
        "keys": [{"kid": k.kid, "created": _iso(k.created), **({"secret": k.secret} if not k.retired else {})}
                 for k in keys.keys if k.created is not None],
        "retired": {k.kid: _iso(k.retired) for k in keys.keys if k.retired},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _retire(key: SigningKey, now: dt.datetime) -> SigningKey:
    return replace(key, secret="" if key.created is not None else key.secret, retired=now)


def rotate(settings: Settings, now: dt.datetime | None = None) -> tuple[SigningKey, list[SigningKey]]:
    """Make a new current key; retire the keys whose tokens have all expired. Returns (new key, retired)."""
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    path = keys_path(settings)
    lifetime = dt.timedelta(seconds=settings.token_ttl_seconds)
    with _locked(path):
        keys = read_keys(settings.resolved_secret(), path)
        new = SigningKey("k" + secrets.token_hex(8), secrets.token_urlsafe(48), now)
        kept, retired = [], []
        for key in keys.keys:
            superseded = key.superseded or now
            if key.retired is None and superseded + lifetime <= now:
                key = _retire(key, now)
                retired.append(key)
            kept.append(replace(key, superseded=superseded))
        _write(path, KeySet((*kept, new), keys.base))
    return new, retired


def retire(settings: Settings, kid: str, now: dt.datetime | None = None) -> SigningKey | None:
    """Retire one key at once (its tokens are refused from then on); None when there is no such key.

    The current key cannot be retired: rotate first, so that something signs.
    """
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    path = keys_path(settings)
    with _locked(path):
        keys = read_keys(settings.resolved_secret(), path)
        found = next((key for key in keys.keys if key.kid == kid), None)
        if found is None:
            return None
        if found is keys.current:
            raise ConfigError(f"key {kid} is the current one; rotate first, then retire it")
        if found.retired is None:
            found = _retire(found, now)
            _write(path, KeySet(tuple(found if key.kid == kid else key for key in keys.keys), keys.base))
    return found


def listing(settings: Settings, now: dt.datetime | None = None) -> list[tuple[str, str, str, str]]:
    """(kid, created, superseded, status) of every key, oldest first."""
    now = now or dt.datetime.now(dt.UTC)
    keys = read_keys(settings.resolved_secret(), keys_path(settings))
    lifetime = dt.timedelta(seconds=settings.token_ttl_seconds)
    rows = []
    for key in keys.keys:
        if key.retired:
            status = f"retired {_iso(key.retired)}"
        elif key is keys.current:
            status = "current: signs"
        elif key.superseded is not None and key.superseded + lifetime > now:
            status = f"verifies until {_iso(key.superseded + lifetime)}"
        else:
            status = "verifies; its tokens have expired (retired at the next rotate)"
        created = "base secret" if key.created is None else _iso(key.created)
        rows.append((key.kid, created, "-" if key.superseded is None else _iso(key.superseded), status))
    return rows
