"""The change feed's positions, per tenant: where a `since` pull may read up to, and the cursor it hands out.

Every change is logged in `change_log` under the transaction that made it (`xid`), and a pull reads the log in
(xid, id, place) order. A pull must stop below every transaction of its tenant still running, or a cursor that
moved past one would skip its changes when it commits. Stopping below every transaction still running, of any
tenant, made one tenant's long write hold back every other tenant's feed. So every transaction that writes a
tenant's data holds the tenant's write gate (gateway/references.py) from before it has a transaction id until
it commits, and a pull stops below the oldest transaction holding its own tenant's gate (`feed_cutoff`).

Positions are global transaction ids, from which one tenant could estimate the others' volume; the cursor a
pull returns (`next_since`) is therefore the position encrypted (AES-SIV) under a key derived from the server's
secret, bound to the tenant: it says nothing, and is of no use to another tenant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from .errors import BadRequest

Position = tuple[int, int, int]  # (transaction id, change_log id, place in that entry's keys)
START: Position = (0, 0, 0)
_PREFIX = "c1."
_PACK = struct.Struct(">QQQ")
# Cursors handed out before they were encrypted: three unsigned integers, still read.
_PLAIN = re.compile(r"(\d{1,20})\.(\d{1,20})\.(\d{1,20})")
_BAD = "Field 'since' must be 0 or a next_since value returned earlier"


class Cursors:
    """Encrypts and decrypts feed positions for one server secret."""

    def __init__(self, secret: str) -> None:
        key = hmac.new(secret.encode(), b"change-feed cursor key", hashlib.sha512).digest()  # AES-256-SIV
        self._siv = AESSIV(key)

    def cursor(self, tenant_id: int, position: Position) -> str:
        sealed = self._siv.encrypt(_PACK.pack(*position), [_tenant(tenant_id)])
        return _PREFIX + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def position(self, tenant_id: int, value: object) -> Position:
        """The position a `since` value names: 0 (the start), a cursor of this tenant, or an old plain one."""
        if value in (0, "0", ""):
            return START
        if not isinstance(value, str) or len(value) > 200:
            raise BadRequest(_BAD, field="since")
        if value.startswith(_PREFIX):
            raw = value[len(_PREFIX):]
            try:
                sealed = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
                xid, log_id, place = _PACK.unpack(self._siv.decrypt(sealed, [_tenant(tenant_id)]))
            except (binascii.Error, ValueError, InvalidTag, struct.error):
                raise BadRequest(_BAD, field="since") from None
            return xid, log_id, place
        plain = _PLAIN.fullmatch(value)
        if plain is None:
            raise BadRequest(_BAD, field="since")
        xid, log_id, place = (int(part) for part in plain.groups())
        if xid >= 2**64 or max(log_id, place) >= 2**63:
            raise BadRequest(_BAD, field="since")
        return xid, log_id, place


def _tenant(tenant_id: int) -> bytes:
    return b"tenant:%d" % tenant_id
