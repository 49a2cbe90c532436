"""Settings, read once from environment variables (documented in README.md)."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
SQL_DIR = PROJECT_ROOT / "sql"

MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """A setting is missing or malformed; the process cannot start."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _bool(env: dict[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def cors_origin(raw: str, name: str = "GATEWAY_CORS_ORIGINS") -> str:
    """`raw` if it is one origin written exactly as a browser sends it in its Origin header, else ConfigError.

    The allow-list is compared character for character with that header, so a spelling a browser never sends
    (upper case, a default port, a trailing slash) would allow nobody: it is refused, naming the spelling to
    use. `*` and `null` are refused: the list names each origin that may call the API.
    """
    if raw == "*":
        raise ConfigError(f"{name}: '*' is not accepted; list each origin that may call the API, "
                          "e.g. https://pos.example.com")
    if raw.lower() == "null":
        raise ConfigError(f"{name}: 'null' is not accepted: it is the origin of sandboxed pages and local files, "
                          "which any page can take on")
    shape = f"{name}: {raw!r} is not an origin; write scheme://host[:port], e.g. https://pos.example.com"
    if not raw.isascii():
        raise ConfigError(f"{shape}; an internationalised host name goes in its xn-- form")
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if (scheme not in _DEFAULT_PORTS or not parts.netloc or "@" in parts.netloc or not raw.isprintable()
            or " " in raw):
        raise ConfigError(shape)
    host = parts.hostname or ""
    try:
        port = parts.port
        if port == 0:
            raise ValueError(port)
        if parts.netloc.startswith("["):
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        elif not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
            raise ValueError(host)
    except ValueError:
        raise ConfigError(shape) from None
    canonical = f"{scheme}://{host}" + ("" if port in (None, _DEFAULT_PORTS[scheme]) else f":{port}")
    if canonical != raw:
        raise ConfigError(f"{name}: {raw!r} is not an origin as a browser sends it; write {canonical!r}")
    return raw


def _origins(env: dict[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of origins; empty items and repeats are left out."""
    items = (item.strip() for item in (env.get(name) or "").split(","))
    return tuple(dict.fromkeys(cors_origin(item, name) for item in items if item))


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    jwt_secret: str | None = None
    token_ttl_seconds: int = 24 * 3600
    # How long a refresh token (gateway/tokens.py) may wait for its use; each use hands out a new one.
    refresh_ttl_seconds: int = 30 * 24 * 3600
    jwt_issuer: str = "erp-sync-gateway"
    jwt_audience: str = "erp-sync-api"
    pool_min_size: int = 2
    pool_max_size: int = 10
    # How long a request waits for a free database connection before it answers 503 (Retry-After): a worker
    # whose connections are all busy sheds load instead of queueing requests without bound.
    pool_timeout_seconds: float = 5.0
    max_body_bytes: int = 64 * 1024 * 1024
    max_records: int = 10_000
    log_level: str = "INFO"
    # Fast answers its body codes 201, 202 and 601 with HTTP 200; operators who want REST statuses get
    # 404, 400 and 422 for them instead.
    rest_statuses: bool = False
    # Origins whose browser pages may call the API (CORS); none: CORS is off.
    cors_origins: tuple[str, ...] = ()
    # Audit log rows older than this many days are purged (gateway/audit.py).
    audit_retention_days: int = 365
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for origin in self.cors_origins:  # settings built in code are checked as those read from the environment
            cors_origin(origin, "cors_origins")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("GATEWAY_DATA_DIR") or PROJECT_ROOT / "var")
        secret = env.get("GATEWAY_JWT_SECRET") or None
        if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"GATEWAY_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        return cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL") or None,
            jwt_secret=secret,
            token_ttl_seconds=_int(env, "GATEWAY_TOKEN_TTL", 24 * 3600),
            refresh_ttl_seconds=_int(env, "GATEWAY_REFRESH_TTL", 30 * 24 * 3600),
            jwt_issuer=env.get("GATEWAY_JWT_ISSUER") or "erp-sync-gateway",
            jwt_audience=env.get("GATEWAY_JWT_AUDIENCE") or "erp-sync-api",
            pool_min_size=_int(env, "GATEWAY_POOL_MIN", 2),
            pool_max_size=_int(env, "GATEWAY_POOL_MAX", 10),
            pool_timeout_seconds=_seconds(env, "GATEWAY_POOL_TIMEOUT", 5.0),
            max_body_bytes=_int(env, "GATEWAY_MAX_BODY_BYTES", 64 * 1024 * 1024),
            max_records=_int(env, "GATEWAY_MAX_RECORDS", 10_000),
            log_level=(env.get("GATEWAY_LOG_LEVEL") or "INFO").upper(),
            rest_statuses=_bool(env, "GATEWAY_REST_STATUSES"),
            cors_origins=_origins(env, "GATEWAY_CORS_ORIGINS"),
            audit_retention_days=_int(env, "GATEWAY_AUDIT_RETENTION_DAYS", 365),
        )

    def resolved_secret(self) -> str:
        """The JWT signing secret: the configured one, else one kept under the data dir.

        Generated once with O_EXCL so that concurrent workers agree on the same file.
        """
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "jwt_secret"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        secret = path.read_text().strip()
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes")
        return secret
