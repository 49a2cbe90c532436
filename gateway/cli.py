"""The `gateway` command line: serve, migrate, tenant and user administration."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from . import auth
from .config import ConfigError, Settings
from .db import QUERIES, connect, database_url, migrate


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


async def _with_db(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    conn = await connect(database_url(settings))
    try:
        await migrate(conn)
        return await work(conn)
    finally:
        await conn.close()


async def ensure_demo(conn: asyncpg.Connection) -> tuple[str, str] | None:
    """On a database without tenants, create tenant `demo` and admin user `demo`; return the credentials."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE tenant IN EXCLUSIVE MODE")
        if await conn.fetchval(QUERIES["tenant_count"]):
            return None
        tenant_id = await conn.fetchval(QUERIES["tenant_add"], "demo", "Demo tenant")
        password = secrets.token_urlsafe(12)
        await conn.fetchval(QUERIES["user_add"], tenant_id, "demo", auth.hash_password(password), "admin")
        return "demo", password


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from . import server

    url = database_url(settings)  # starts the embedded server when DATABASE_URL is unset; it lives with us

    async def run() -> tuple[str, str] | None:
        conn = await connect(url)
        try:
            await migrate(conn)
            return None if args.no_demo else await ensure_demo(conn)
        finally:
            await conn.close()

    demo = asyncio.run(run())
    if demo:
        print(f"Created tenant 'demo' with admin user '{demo[0]}', password '{demo[1]}' (shown only once).",
              flush=True)
    settings.resolved_secret()  # generate it before the workers start, so they all share it
    os.environ["DATABASE_URL"] = url
    print(f"Serving on http://{args.host}:{args.port} with {args.workers} worker(s)", flush=True)
    server.run("gateway.app:create_app", host=args.host, port=args.port, workers=args.workers,
               access_log=False, log_level="warning")


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    async def run() -> list[str]:
        conn = await connect(database_url(settings))
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    applied = asyncio.run(run())
    print("applied: " + (", ".join(applied) if applied else "nothing, already up to date"))


def cmd_tenant_add(args: argparse.Namespace, settings: Settings) -> None:
    async def work(conn: asyncpg.Connection) -> int:
        try:
            return await conn.fetchval(QUERIES["tenant_add"], args.code, args.name or args.code)
        except asyncpg.UniqueViolationError:
            raise CliError(f"tenant {args.code!r} exists already") from None
        except asyncpg.CheckViolationError:
            raise CliError("tenant code: 1 to 64 letters, digits, '.', '_' or '-'") from None

    tenant_id = asyncio.run(_with_db(settings, work))
    print(f"tenant {args.code!r} created (id {tenant_id})")


def cmd_tenant_lock(args: argparse.Namespace, settings: Settings) -> None:
    if args.until is None and not args.clear:
        raise CliError("give --until yyyy-mm-dd, or --clear")
    try:
        until = None if args.clear else dt.date.fromisoformat(args.until)
    except ValueError:
        raise CliError(f"--until must be a date yyyy-mm-dd, got {args.until!r}") from None

    async def work(conn: asyncpg.Connection) -> None:
        if await conn.fetchval(QUERIES["tenant_lock"], args.code, until) is None:
            raise CliError(f"no tenant {args.code!r}")

    asyncio.run(_with_db(settings, work))
    print(f"tenant {args.code!r}: " + (f"vouchers dated up to {until} are locked" if until else "no period locked"))


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> None:
    password = _read_password(args)

    async def work(conn: asyncpg.Connection) -> None:
        tenant = await conn.fetchrow(QUERIES["tenant_by_code"], args.tenant)
        if tenant is None:
            raise CliError(f"no tenant {args.tenant!r}; create it with: gateway tenant add {args.tenant}")
        try:
            await conn.fetchval(QUERIES["user_add"], tenant["id"], args.username,
                                auth.hash_password(password), args.role)
        except asyncpg.UniqueViolationError:
            raise CliError(f"user {args.username!r} exists already") from None

    asyncio.run(_with_db(settings, work))
    print(f"user {args.username!r} ({args.role}) added to tenant {args.tenant!r}")


def cmd_user_passwd(args: argparse.Namespace, settings: Settings) -> None:
    password = _read_password(args)

    async def work(conn: asyncpg.Connection) -> None:
        if await conn.fetchval(QUERIES["user_passwd"], args.username, auth.hash_password(password)) is None:
            raise CliError(f"no user {args.username!r}")

    asyncio.run(_with_db(settings, work))
    print(f"password of {args.username!r} changed; tokens issued before now are refused")


def _set_disabled(disabled: bool) -> Callable[[argparse.Namespace, Settings], None]:
    def command(args: argparse.Namespace, settings: Settings) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            if await conn.fetchval(QUERIES["user_set_disabled"], args.username, disabled) is None:
                raise CliError(f"no user {args.username!r}")

        asyncio.run(_with_db(settings, work))
        print(f"user {args.username!r} {'disabled; its tokens are refused' if disabled else 'enabled'}")

    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Fast-compatible ERP sync gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, then serve the API")
    serve.add_argument("--host", default=os.environ.get("GATEWAY_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("GATEWAY_PORT", "8000")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("GATEWAY_WORKERS", os.cpu_count() or 1)))
    serve.add_argument("--no-demo", action="store_true", help="do not create the demo tenant on an empty database")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply pending SQL migrations").set_defaults(func=cmd_migrate)

    tenant = sub.add_parser("tenant", help="tenant administration").add_subparsers(dest="action", required=True)
    t_add = tenant.add_parser("add", help="create a tenant")
    t_add.add_argument("code")
    t_add.add_argument("--name")
    t_add.set_defaults(func=cmd_tenant_add)
    t_lock = tenant.add_parser("lock", help="lock the accounting period up to a date (vouchers dated in it are refused)")
    t_lock.add_argument("code")
    t_lock.add_argument("--until", help="the last locked day, yyyy-mm-dd")
    t_lock.add_argument("--clear", action="store_true", help="unlock every period")
    t_lock.set_defaults(func=cmd_tenant_lock)

    user = sub.add_parser("user", help="user administration").add_subparsers(dest="action", required=True)

    def password_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--password", help="the password (else prompted, or read from standard input)")
        p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    u_add = user.add_parser("add", help="create a user")
    u_add.add_argument("username")
    u_add.add_argument("--tenant", required=True)
    u_add.add_argument("--role", choices=auth.ROLES, default="writer")
    password_opts(u_add)
    u_add.set_defaults(func=cmd_user_add)

    u_pw = user.add_parser("passwd", help="set a user's password")
    u_pw.add_argument("username")
    password_opts(u_pw)
    u_pw.set_defaults(func=cmd_user_passwd)

    for name, disabled in (("disable", True), ("enable", False)):
        p = user.add_parser(name, help=f"{name} a user")
        p.add_argument("username")
        p.set_defaults(func=_set_disabled(disabled))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        args.func(args, settings)
    except (CliError, ConfigError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
