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
MAX_RATE_LIMIT = 1_000_000_000  # requests per minute; the tenant's columns are integers


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


def _bool(env: dict[str, str], name: str, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
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


def _metrics_switch(env: dict[str, str]) -> bool:
    raw = (env.get("GATEWAY_METRICS") or "on").strip().lower()
    if raw not in ("on", "off"):
        raise ConfigError(f"GATEWAY_METRICS must be on or off, got {raw!r}")
    return raw == "on"


def _metrics_token(env: dict[str, str]) -> str | None:
    """The bearer token a scrape of /metrics must carry: long enough not to be guessed, as the JWT secret."""
    token = env.get("GATEWAY_METRICS_TOKEN") or None
    if token is not None and not (len(token) >= MIN_SECRET_BYTES and token.isascii() and token.isprintable()
                                  and " " not in token):
        raise ConfigError(f"GATEWAY_METRICS_TOKEN must be at least {MIN_SECRET_BYTES} printable ASCII characters "
                          "without spaces")
    return token


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str | None = None
    # Migrations and the command line's administration connect with this (the tables' owner); None: as the API.
    owner_url: str | None = None
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
    # /openapi.json and the /docs page (gateway/docs_page.py); an operator may keep the description private.
    docs: bool = True
    # Origins whose browser pages may call the API (CORS); none: CORS is off.
    cors_origins: tuple[str, ...] = ()
    # Audit log rows older than this many days are purged (gateway/audit.py).
    audit_retention_days: int = 365
    # Requests per minute per tenant and per user (gateway/ratelimit.py), unless the tenant sets its own; 0: none.
    # Above what one host serves, so that a tenant's own setting is what binds.
    rate_limit_tenant: int = 600_000
    rate_limit_user: int = 300_000
    # GET /metrics (gateway/metrics.py): off answers 404 and times no request; on, a scrape needs the bearer token.
    metrics: bool = True
    metrics_token: str | None = None
    # Webhooks (gateway/webhooks.py). Receivers on loopback, private or link-local addresses are refused
    # unless allowed (tests, on-premise installs); a failed delivery is retried after base, 2 x base, ...
    # seconds (at most max_delay apart, with jitter) until `window` seconds have passed since its first try.
    webhook_allow_private: bool = False
    webhook_retry_base_seconds: float = 5.0
    webhook_retry_max_delay_seconds: float = 12 * 3600.0
    webhook_retry_window_seconds: float = 3 * 24 * 3600.0
    webhook_timeout_seconds: float = 10.0
    webhook_poll_seconds: float = 1.0  # how often the dispatcher looks for new changes
    webhook_secret_grace_seconds: float = 24 * 3600.0  # a rotated-out secret still signs this long
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for origin in self.cors_origins:  # settings built in code are checked as those read from the environment
            cors_origin(origin, "cors_origins")
        for name, value in (("GATEWAY_RATE_LIMIT_TENANT", self.rate_limit_tenant),
                            ("GATEWAY_RATE_LIMIT_USER", self.rate_limit_user)):
            if not 0 <= value <= MAX_RATE_LIMIT:
                raise ConfigError(f"{name} must be between 0 (no limit) and {MAX_RATE_LIMIT}, got {value}")

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
            owner_url=env.get("GATEWAY_OWNER_URL") or None,
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
            docs=_bool(env, "GATEWAY_DOCS", default=True),
            cors_origins=_origins(env, "GATEWAY_CORS_ORIGINS"),
            audit_retention_days=_int(env, "GATEWAY_AUDIT_RETENTION_DAYS", 365),
            metrics=_metrics_switch(env),
            metrics_token=_metrics_token(env),
            rate_limit_tenant=_int(env, "GATEWAY_RATE_LIMIT_TENANT", 600_000, minimum=0),
            rate_limit_user=_int(env, "GATEWAY_RATE_LIMIT_USER", 300_000, minimum=0),
            webhook_allow_private=_bool(env, "GATEWAY_WEBHOOK_ALLOW_PRIVATE"),
            webhook_retry_base_seconds=_seconds(env, "GATEWAY_WEBHOOK_RETRY_BASE", 5.0),
            webhook_retry_max_delay_seconds=_seconds(env, "GATEWAY_WEBHOOK_RETRY_MAX_DELAY", 12 * 3600.0),
            webhook_retry_window_seconds=_seconds(env, "GATEWAY_WEBHOOK_RETRY_WINDOW", 3 * 24 * 3600.0),
            webhook_timeout_seconds=_seconds(env, "GATEWAY_WEBHOOK_TIMEOUT", 10.0),
            webhook_poll_seconds=_seconds(env, "GATEWAY_WEBHOOK_POLL", 1.0),
            webhook_secret_grace_seconds=_seconds(env, "GATEWAY_WEBHOOK_SECRET_GRACE", 24 * 3600.0),
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
