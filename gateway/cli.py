"""The `gateway` command line: serve, migrate, tenant and user administration."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
import secrets
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from . import audit, auth, costing, keys, permissions, ratelimit, tenants
from .config import ConfigError, Settings
from .db import APP_ROLE, QUERIES, connect, migrate, owner_url, with_user

if TYPE_CHECKING:
    from .forms import Registry


class CliError(Exception):
    pass


def _read_password(args: argparse.Namespace) -> str:
    if args.password:
        password = args.password
    elif args.password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat password: "):
            raise CliError("passwords differ")
    if len(password) < 8:
        raise CliError("password must be at least 8 characters")
    return password


def _registry() -> Registry:
    from forms import FORM_MODULES

    from .forms import build_registry

    return build_registry(FORM_MODULES)


def _currency_code(value: str) -> str:
    try:
        return tenants.check_currency_code(value)
    except tenants.SetupError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [list(headers), *(["-" if v is None else str(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
    return "\n".join(lines)


async def _with_db(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    conn = await connect(owner_url(settings))  # administration spans tenants: the owner, not the API's role
    try:
        await migrate(conn)
        return await work(conn)
    finally:
        await conn.close()


async def ensure_demo(conn: asyncpg.Connection, registry: Registry | None = None) -> tuple[str, str] | None:
    """On a database without tenants, create tenant `demo` and admin user `demo`; return the credentials."""
    if await conn.fetchval(QUERIES["tenant_count"]):
        return None  # the common case, without building the registry
    registry = registry or _registry()
    await tenants.stage(conn, registry)
    async with conn.transaction():
        await conn.execute(QUERIES["tenant_lock_table"])
        if await conn.fetchval(QUERIES["tenant_count"]):
            return None
        tenant_id = await tenants.create_tenant(conn, registry, "demo", "Demo tenant")
        password = secrets.token_urlsafe(12)
        await conn.fetchval(QUERIES["user_add"], tenant_id, "demo", auth.hash_password(password), "admin")
        return "demo", password


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from . import server
    from .logging import configure_logging

    configure_logging(settings.log_level)  # so that migrations applied at start are logged, as JSON
    # Migrated as the owner, served as the API's role (on the embedded server, started here when DATABASE_URL
    # is unset and living with us: its superuser, then gateway_app, which the migrations create).
    url = owner_url(settings)
    app_url = settings.database_url or with_user(url, APP_ROLE)

    async def run() -> tuple[str, str] | None:
        conn = await connect(url)
        try:
            await migrate(conn)
            return None if args.no_demo else await ensure_demo(conn)
        finally:
            await conn.close()

    demo = asyncio.run(run())
    # The operator's lines (the demo password, "Serving on") are plain text, not log records: they are read
    # by a person starting the gateway, while the JSON log lines are for machines.
    if demo:
        print(f"Created tenant 'demo' with admin user '{demo[0]}', password '{demo[1]}' (shown only once).",
              flush=True)
    settings.resolved_secret()  # generate it before the workers start, so they all share it
    os.environ["DATABASE_URL"] = app_url

    def ready() -> None:
        print(f"Serving on http://{args.host}:{args.port} with {args.workers} worker(s)", flush=True)

    from .webhook_worker import main as webhook_worker  # delivers webhooks beside the web workers

    # The supervisor is this process: the worker, given its id, stops once it is gone.
    companion = None if args.no_webhook_worker else (webhook_worker, (url, os.getpid()))
    server.run("gateway.app:create_app", host=args.host, port=args.port, workers=args.workers, ready=ready,
               companion=companion, access_log=False, log_level="warning")


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    async def run() -> list[str]:
        conn = await connect(owner_url(settings))
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    print("applied: " + (", ".join(applied) if applied else "nothing, already up to date"))


def _chart_text(chart: str) -> str:
    if chart == tenants.NO_CHART:
        return "no chart of accounts, no posting roles"
    return (f"chart {chart} ({len(tenants.chart_accounts(chart))} accounts), "
            f"{len(tenants.chart_roles(chart))} posting roles")


def cmd_tenant_add(args: argparse.Namespace, settings: Settings) -> None:
    registry = _registry()
    try:
        description = _chart_text(args.chart)  # a missing chart file fails before the database is touched
    except tenants.SetupError as exc:
        raise CliError(str(exc)) from None

    async def work(conn: asyncpg.Connection) -> int:
        try:
            return await tenants.create_tenant(conn, registry, args.code, args.name or args.code,
                                               base_currency=args.base_currency, chart=args.chart)
        except asyncpg.UniqueViolationError:
            raise CliError(f"tenant {args.code!r} exists already") from None
        except asyncpg.CheckViolationError:
            raise CliError("tenant code: 1 to 64 letters, digits, '.', '_' or '-'") from None
        except tenants.SetupError as exc:
            raise CliError(str(exc)) from None

    tenant_id = asyncio.run(_with_db(settings, work))
    print(f"tenant {args.code!r} created (id {tenant_id}): base currency {args.base_currency}, {description}")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _created_text(created: dict[str, int]) -> str:
    counts = ((created["currencies"], "currency", "currencies"), (created["accounts"], "account", "accounts"),
              (created["roles"], "posting role", "posting roles"))
    parts = [_count(n, one, many) for n, one, many in counts if n]
    return "created " + ", ".join(parts) if parts else "nothing missing"


def cmd_tenant_setup(args: argparse.Namespace, settings: Settings) -> None:
    if bool(args.code) == bool(args.all):
        raise CliError("give a tenant code, or --all")
    registry = _registry()

    async def work(conn: asyncpg.Connection) -> None:
        if args.all:
            rows = await conn.fetch(QUERIES["tenant_all"])
        else:
            row = await conn.fetchrow(QUERIES["tenant_by_code"], args.code)
            if row is None:
                raise CliError(f"no tenant {args.code!r}")
            rows = [row]
        for row in rows:  # each tenant in a transaction of its own, reported as soon as it is committed
            chart = args.chart or row["chart"] or tenants.DEFAULT_CHART
            try:
                created = await tenants.provision(conn, registry, row["id"], row["base_currency"], chart)
            except tenants.SetupError as exc:
                raise CliError(f"tenant {row['code']!r}: {exc}") from None
            print(f"tenant {row['code']!r} (base currency {row['base_currency']}, chart {chart}): "
                  + _created_text(created), flush=True)

    asyncio.run(_with_db(settings, work))


def cmd_tenant_list(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        return await conn.fetch(QUERIES["tenant_list"])

    rows = asyncio.run(_with_db(settings, work))
    print(_table(("CODE", "NAME", "BASE CURRENCY", "LOCKED UNTIL", "USERS", "RATE LIMIT", "USER RATE LIMIT"),
                 ((r["code"], r["name"], r["base_currency"], r["locked_until"], r["users"],
                   _limit_shown(r["rate_limit"]), _limit_shown(r["user_rate_limit"])) for r in rows)))


def _limit_shown(value: int | None) -> str:
    """A tenant's limit as `tenant list` shows it: per minute, `none`, or `default` (the settings')."""
    return "default" if value is None else "none" if value == 0 else f"{value}/min"


def cmd_user_list(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        if args.tenant is not None and await conn.fetchrow(QUERIES["tenant_by_code"], args.tenant) is None:
            raise CliError(f"no tenant {args.tenant!r}")
        return await conn.fetch(QUERIES["user_list"], args.tenant)

    rows = asyncio.run(_with_db(settings, work))
    print(_table(("USERNAME", "TENANT", "ROLE", "STATUS"),
                 ((r["username"], r["tenant"], r["role"], "disabled" if r["disabled"] else "enabled")
                  for r in rows)))


def cmd_tenant_lock(args: argparse.Namespace, settings: Settings) -> None:
    if args.until is None and not args.clear:
        raise CliError("give --until yyyy-mm-dd, or --clear")
    try:
        until = None if args.clear else dt.date.fromisoformat(args.until)
    except ValueError:
        raise CliError(f"--until must be a date yyyy-mm-dd, got {args.until!r}") from None

    async def work(conn: asyncpg.Connection) -> None:
        if not await tenants.lock_period(conn, args.code, until):
            raise CliError(f"no tenant {args.code!r}")

    asyncio.run(_with_db(settings, work))
    print(f"tenant {args.code!r}: "
          + (f"vouchers dated up to {until} are locked" if until else "no period locked"))


def cmd_tenant_set(args: argparse.Namespace, settings: Settings) -> None:
    limits = {"rate limit": args.rate_limit, "user rate limit": args.user_rate_limit}
    if args.negative_stock is None and all(v is None for v in limits.values()):
        raise CliError("give --negative-stock, --rate-limit or --user-rate-limit")

    async def work(conn: asyncpg.Connection) -> None:
        async with conn.transaction():  # every option given, or none
            found = True
            if args.negative_stock is not None:
                found = await costing.set_negative_stock(conn, args.code, args.negative_stock)
            if found and any(v is not None for v in limits.values()):
                found = await ratelimit.set_limits(
                    conn, args.code, tenant=_limit_value(args.rate_limit), set_tenant=args.rate_limit is not None,
                    user=_limit_value(args.user_rate_limit), set_user=args.user_rate_limit is not None)
            if not found:
                raise CliError(f"no tenant {args.code!r}")

    asyncio.run(_with_db(settings, work))
    changes = [f"negative stock {args.negative_stock}"] if args.negative_stock is not None else []
    changes += [f"{name} {_limit_shown(_limit_value(raw))}" for name, raw in limits.items() if raw is not None]
    print(f"tenant {args.code!r}: " + ", ".join(changes))


def _rate_limit(raw: str) -> str:
    """`--rate-limit`'s value, checked: requests per minute, 0 (none) or `default`."""
    try:
        ratelimit.parse_limit(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return raw


def _limit_value(raw: str | None) -> int | None:
    return None if raw is None else ratelimit.parse_limit(raw)


def cmd_tenant_recost(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> tuple[int, int]:
        row = await conn.fetchrow(QUERIES["tenant_by_code"], args.code)
        if row is None:
            raise CliError(f"no tenant {args.code!r}")
        return await costing.recost_tenant(conn, row["id"])

    items, changed = asyncio.run(_with_db(settings, work))
    print(f"tenant {args.code!r}: {items} items valued, {changed} movements changed")


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> None:
    password = _read_password(args)

    async def work(conn: asyncpg.Connection) -> None:
        tenant = await conn.fetchrow(QUERIES["tenant_by_code"], args.tenant)
        if tenant is None:
            raise CliError(f"no tenant {args.tenant!r}; create it with: gateway tenant add {args.tenant}")
        password_hash = auth.hash_password(password)
        try:
            async with conn.transaction():
                await _check_role(conn, tenant["id"], args.tenant, args.role)
                await conn.fetchval(QUERIES["user_add"], tenant["id"], args.username, password_hash, args.role)
        except asyncpg.UniqueViolationError:
            raise CliError(f"user {args.username!r} exists already") from None

    asyncio.run(_with_db(settings, work))
    print(f"user {args.username!r} ({args.role}) added to tenant {args.tenant!r}")


def cmd_user_passwd(args: argparse.Namespace, settings: Settings) -> None:
    password = _read_password(args)

    async def work(conn: asyncpg.Connection) -> None:
        async with conn.transaction():  # the change and its audit row commit together
            if await conn.fetchval(QUERIES["user_passwd"], args.username, auth.hash_password(password)) is None:
                raise CliError(f"no user {args.username!r}")
            await audit.admin_event(conn, audit.PASSWORD_CHANGED, args.username)

    asyncio.run(_with_db(settings, work))
    print(f"password of {args.username!r} changed; tokens issued before now are refused")


def cmd_user_role(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            user = await conn.fetchrow(QUERIES["user_tenant"], args.username)
            if user is None:
                raise CliError(f"no user {args.username!r}")
            await _check_role(conn, user["tenant_id"], user["tenant_code"], args.role)
            if await conn.fetchval(QUERIES["user_set_role"], args.username, args.role) is None:
                raise CliError(f"no user {args.username!r}")
            await audit.admin_event(conn, audit.ROLE_CHANGED, args.username, f"role {args.role}")

    asyncio.run(_with_db(settings, work))
    print(f"role of {args.username!r} set to {args.role}; tokens issued before now are refused")


# --- roles: built-in (gateway/permissions.py) and the tenants' own (table tenant_role) ---------------------

async def _check_role(conn: asyncpg.Connection, tenant_id: int, tenant_code: str, role: str) -> None:
    """Refuse a role that is neither built in nor the tenant's own. Run in the transaction that gives the role:
    the tenant's role is then kept from being deleted until the user holding it is committed."""
    if permissions.is_builtin(role):
        return
    if await conn.fetchval(QUERIES["role_for_tenant"], tenant_id, role) is None:
        raise CliError(f"invalid choice: {role!r}: neither a built-in role ({', '.join(permissions.ROLES)}) nor "
                       f"a role of tenant {tenant_code!r} (see: gateway role list --tenant {tenant_code})")


def _permission_text(texts: Sequence[str]) -> str:
    return " ".join(texts)


def cmd_role_list(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        if args.tenant is not None and await conn.fetchrow(QUERIES["tenant_by_code"], args.tenant) is None:
            raise CliError(f"no tenant {args.tenant!r}")
        return await conn.fetch(QUERIES["role_list"], args.tenant)

    rows = asyncio.run(_with_db(settings, work))
    builtin = [("(built-in)", name, "-", _permission_text(texts) + (" and the admin-only forms" if
                                                                    name == permissions.ADMIN else ""))
               for name, texts in permissions.BUILTIN_ROLES.items()]
    print(_table(("TENANT", "ROLE", "USERS", "PERMISSIONS"),
                 [*builtin, *((r["tenant"], r["name"], r["users"], _permission_text(r["permissions"])) for r in rows)]))


def cmd_role_create(args: argparse.Namespace, settings: Settings) -> None:
    if not permissions.ROLE_NAME.fullmatch(args.name):
        raise CliError("role name: a lower-case letter, then up to 63 lower-case letters, digits, '_', '.' or '-'")
    if permissions.is_builtin(args.name):
        raise CliError(f"{args.name!r} is a built-in role; choose another name")
    try:
        checked = permissions.policy_for(_registry()).check(args.allow)
    except permissions.InvalidPermission as exc:
        raise CliError(str(exc)) from None
    texts = list(dict.fromkeys(str(p) for p in checked))  # as written once, in the order given

    async def work(conn: asyncpg.Connection) -> None:
        tenant = await conn.fetchrow(QUERIES["tenant_by_code"], args.tenant)
        if tenant is None:
            raise CliError(f"no tenant {args.tenant!r}")
        try:
            await conn.fetchval(QUERIES["role_create"], tenant["id"], args.name, texts)
        except asyncpg.UniqueViolationError:
            raise CliError(f"role {args.name!r} exists already in tenant {args.tenant!r}") from None

    asyncio.run(_with_db(settings, work))
    print(f"role {args.name!r} created in tenant {args.tenant!r}: {_permission_text(texts)}")


def cmd_role_delete(args: argparse.Namespace, settings: Settings) -> None:
    if permissions.is_builtin(args.name):
        raise CliError(f"{args.name!r} is a built-in role; it cannot be deleted")

    async def work(conn: asyncpg.Connection) -> None:
        tenant = await conn.fetchrow(QUERIES["tenant_by_code"], args.tenant)
        if tenant is None:
            raise CliError(f"no tenant {args.tenant!r}")
        async with conn.transaction():
            if await conn.fetchval(QUERIES["role_lock"], tenant["id"], args.name) is None:
                raise CliError(f"no role {args.name!r} in tenant {args.tenant!r}")
            holders = [r["username"] for r in await conn.fetch(QUERIES["role_holders"], tenant["id"], args.name)]
            if holders:
                # A user left with a deleted role would be refused everything: give them another role first.
                raise CliError(f"role {args.name!r} is held by {', '.join(map(repr, holders))}; give them "
                               "another role first (gateway user role USER ROLE)")
            await conn.fetchval(QUERIES["role_delete"], tenant["id"], args.name)

    asyncio.run(_with_db(settings, work))
    print(f"role {args.name!r} deleted from tenant {args.tenant!r}")


def _set_disabled(disabled: bool) -> Callable[[argparse.Namespace, Settings], None]:
    def command(args: argparse.Namespace, settings: Settings) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():  # the change and its audit row commit together
                if await conn.fetchval(QUERIES["user_set_disabled"], args.username, disabled) is None:
                    raise CliError(f"no user {args.username!r}")
                await audit.admin_event(conn, audit.USER_DISABLED if disabled else audit.USER_ENABLED, args.username)

        asyncio.run(_with_db(settings, work))
        print(f"user {args.username!r} {'disabled; its tokens are refused' if disabled else 'enabled'}")

    return command


def cmd_audit_purge(args: argparse.Namespace, settings: Settings) -> None:
    days = settings.audit_retention_days if args.days is None else args.days
    if days < 1:
        raise CliError("--days must be at least 1")

    async def work(conn: asyncpg.Connection) -> int:
        return await audit.purge_all(conn, days)

    deleted = asyncio.run(_with_db(settings, work))
    print(f"audit log: {deleted} rows older than {days} days deleted")


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> None:
    new, retired = keys.rotate(settings)
    print(f"key {new.kid} signs from now on; the keys before it verify until their tokens expire"
          + "".join(f"\nkey {key.kid} retired: its tokens have all expired" for key in retired))


def cmd_keys_retire(args: argparse.Namespace, settings: Settings) -> None:
    if keys.retire(settings, args.kid) is None:
        raise CliError(f"no key {args.kid!r}")
    print(f"key {args.kid} retired: the tokens it signed are refused")


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> None:
    print(_table(("KID", "CREATED", "SUPERSEDED", "STATUS"), keys.listing(settings)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Fast-compatible ERP sync gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, then serve the API")
    serve.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")))
    serve.add_argument("--workers", type=int,
                       default=int(os.environ.get("GATEWAY_WORKERS", os.cpu_count() or 1)))
    serve.add_argument("--no-demo", action="store_true",
                       help="do not create the demo tenant on an empty database")
    serve.add_argument("--no-webhook-worker", action="store_true",
                       help="do not run the webhook delivery worker (run `gateway webhook worker` instead)")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply pending SQL migrations").set_defaults(func=cmd_migrate)

    tenant = sub.add_parser("tenant", help="tenant administration").add_subparsers(dest="action",
                                                                                   required=True)
    t_add = tenant.add_parser("add", help="create a tenant with its base currency, chart and posting roles")
    t_add.add_argument("code")
    t_add.add_argument("--name")
    t_add.add_argument("--base-currency", type=_currency_code, metavar="CODE",
                       default=tenants.DEFAULT_CURRENCY,
                       help=f"ISO 4217 code of three capital letters (default {tenants.DEFAULT_CURRENCY})")
    t_add.add_argument("--chart", choices=tenants.CHARTS, default=tenants.DEFAULT_CHART,
                       help="chart of accounts: Vietnamese Circular 200 (default), Circular 133, or none")
    t_add.set_defaults(func=cmd_tenant_add)
    t_setup = tenant.add_parser("setup", help="add the currency, accounts and posting roles a tenant lacks")
    t_setup.add_argument("code", nargs="?")
    t_setup.add_argument("--all", action="store_true", help="every tenant")
    t_setup.add_argument("--chart", choices=tenants.CHARTS,
                         help="default: the chart the tenant was created with, else c200")
    t_setup.set_defaults(func=cmd_tenant_setup)
    tenant.add_parser("list", help="list the tenants").set_defaults(func=cmd_tenant_list)
    t_lock = tenant.add_parser(
        "lock", help="lock the accounting period up to a date (vouchers dated in it are refused)")
    t_lock.add_argument("code")
    t_lock.add_argument("--until", help="the last locked day, yyyy-mm-dd")
    t_lock.add_argument("--clear", action="store_true", help="unlock every period")
    t_lock.set_defaults(func=cmd_tenant_lock)
    t_set = tenant.add_parser("set", help="change a tenant's settings")
    t_set.add_argument("code")
    t_set.add_argument("--negative-stock", choices=costing.NEGATIVE_STOCK,
                       help="refuse (default): an outflow beyond the stock on hand is refused; allow: costed at the"
                            " last average")
    t_set.add_argument("--rate-limit", type=_rate_limit, metavar="N",
                       help="requests per minute for the whole tenant; 0: none; default: GATEWAY_RATE_LIMIT_TENANT")
    t_set.add_argument("--user-rate-limit", type=_rate_limit, metavar="N",
                       help="requests per minute for each user of the tenant; 0: none; default: GATEWAY_RATE_LIMIT_USER")
    t_set.set_defaults(func=cmd_tenant_set)
    t_recost = tenant.add_parser("recost", help="value all the tenant's stock movements again (cost of sales)")
    t_recost.add_argument("code")
    t_recost.set_defaults(func=cmd_tenant_recost)

    user = sub.add_parser("user", help="user administration").add_subparsers(dest="action", required=True)

    def password_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--password", help="the password (else prompted, or read from standard input)")
        p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    u_add = user.add_parser("add", help="create a user")
    u_add.add_argument("username")
    u_add.add_argument("--tenant", required=True)
    u_add.add_argument("--role", default="writer", help="a built-in role or one of the tenant's (default writer)")
    password_opts(u_add)
    u_add.set_defaults(func=cmd_user_add)

    u_pw = user.add_parser("passwd", help="set a user's password")
    u_pw.add_argument("username")
    password_opts(u_pw)
    u_pw.set_defaults(func=cmd_user_passwd)

    u_role = user.add_parser("role", help="change a user's role (its tokens are refused from then on)")
    u_role.add_argument("username")
    u_role.add_argument("role", help="a built-in role or one of the user's tenant's (gateway role list)")
    u_role.set_defaults(func=cmd_user_role)

    for name, disabled in (("disable", True), ("enable", False)):
        p = user.add_parser(name, help=f"{name} a user")
        p.add_argument("username")
        p.set_defaults(func=_set_disabled(disabled))

    u_list = user.add_parser("list", help="list the users")
    u_list.add_argument("--tenant", help="only this tenant's users")
    u_list.set_defaults(func=cmd_user_list)

    audit_log = sub.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    a_purge = audit_log.add_parser("purge", help="delete the rows older than the retention")
    a_purge.add_argument("--days", type=int, help="keep this many days (default: GATEWAY_AUDIT_RETENTION_DAYS, 365)")
    a_purge.set_defaults(func=cmd_audit_purge)

    key = sub.add_parser("keys", help="JWT signing keys").add_subparsers(dest="action", required=True)
    key.add_parser("rotate", help="a new signing key; the old ones verify until their tokens expire"
                   ).set_defaults(func=cmd_keys_rotate)
    k_retire = key.add_parser("retire", help="refuse the tokens a key signed from now on (a leaked key)")
    k_retire.add_argument("kid")
    k_retire.set_defaults(func=cmd_keys_retire)
    key.add_parser("list", help="list the signing keys").set_defaults(func=cmd_keys_list)

    role = sub.add_parser("role", help="roles and their permissions").add_subparsers(dest="action", required=True)
    r_list = role.add_parser("list", help="list the built-in roles and the tenants' own")
    r_list.add_argument("--tenant", help="only this tenant's own roles (the built-in ones are always listed)")
    r_list.set_defaults(func=cmd_role_list)
    r_create = role.add_parser("create", help="define a role of a tenant's own")
    r_create.add_argument("tenant")
    r_create.add_argument("name")
    r_create.add_argument("--allow", action="append", required=True, metavar="ACTION:PATTERN",
                          help="a permission, e.g. write:setCustomer, read:get*, *:@vouchers (repeatable)")
    r_create.set_defaults(func=cmd_role_create)
    r_delete = role.add_parser("delete", help="delete a tenant's role that no user holds")
    r_delete.add_argument("tenant")
    r_delete.add_argument("name")
    r_delete.set_defaults(func=cmd_role_delete)

    from .webhook_cli import add_commands  # it builds on this module's helpers

    add_commands(sub)
    from . import pull, push  # files to and from a running gateway, through its API

    push.add_parser(sub)
    pull.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # The embedded PostgreSQL package's imports warn when XDG_RUNTIME_DIR is unset (containers, cron, ssh
    # without a login session) and fall back to a directory that works; operators cannot act on it.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning,
                            module=r"platformdirs(\.|$)")
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        status = args.func(args, settings)  # push and pull have exit statuses of their own
    except (CliError, ConfigError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    # `python -m gateway.cli` runs this file as __main__, beside gateway.cli, which the command modules import
    # (gateway/webhook_cli.py): run that module's main, so that the errors they raise are the ones it catches.
    from gateway.cli import main as package_main

    sys.exit(package_main())
