"""`switchboard`: one command line for every role."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Coroutine
from typing import Any

import uvloop

from runtime.settings import Settings, SettingsError, load_settings


def _run(main: Coroutine[Any, Any, Any]) -> Any:
    return uvloop.run(main)


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "port", None) is not None:
        overrides["http_port"] = args.port
    if getattr(args, "sip_port", None) is not None and args.command == "media":
        overrides["sip_port"] = args.sip_port
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    return load_settings(file=args.config, **overrides)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="switchboard", description="Switchboard multi-tenant call center backend."
    )
    parser.add_argument("--config", help="TOML settings file (default: $SWITCHBOARD_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="everything in one process, with embedded PostgreSQL/NATS")
    dev.add_argument("--port", type=int, help="HTTP port (default 8080)")
    dev.add_argument("--data-dir", help="where embedded services keep data (default .switchboard)")
    api = sub.add_parser("api", help="the HTTP API")
    api.add_argument("--port", type=int)
    sub.add_parser("worker", help="outbox relay, mail delivery, housekeeping")
    media = sub.add_parser("media", help="a media node: SIP trunks, RTP, IVR flows")
    media.add_argument("--sip-port", type=int, help="SIP port for UDP and TCP (default 5060)")
    sub.add_parser("router", help="the ACD router: presence, queues, routing decisions")
    sub.add_parser("migrate", help="create roles and apply SQL migrations (admin URL)")
    keys = sub.add_parser("keys", help="access-token signing keys")
    keys.add_argument("action", choices=["rotate"])
    numbers = sub.add_parser("numbers", help="the platform number inventory")
    numbers_sub = numbers.add_subparsers(dest="numbers_command", required=True)
    load = numbers_sub.add_parser("import", help="load E.164 numbers from a CSV file")
    load.add_argument("file", help="CSV with a header: number[,country][,capabilities]")
    load.add_argument("--trunk", required=True, help="the platform trunk the numbers arrive on")
    trunks = sub.add_parser("trunks", help="platform SIP trunks (the operator's carriers)")
    trunks_sub = trunks.add_subparsers(dest="trunks_command", required=True)
    add = trunks_sub.add_parser("add-platform", help="add a platform trunk")
    add.add_argument("name", help="lowercase letters, digits and hyphens, e.g. carrier-a")
    add.add_argument("--host", required=True, help="the carrier's SIP host (name or IP)")
    # dest sip_port: `--port` elsewhere means the HTTP port (see _settings).
    add.add_argument("--port", dest="sip_port", type=int, default=5060, help="default 5060")
    add.add_argument("--transport", choices=["udp", "tcp", "tls"], default="udp")
    add.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="a source network calls may come from (repeatable)",
    )
    add.add_argument("--username", help="outbound digest username")
    add.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the outbound password"
    )
    add.add_argument(
        "--codec",
        action="append",
        choices=["PCMU", "PCMA"],
        help="in order of preference (repeatable; default PCMU, PCMA)",
    )
    add.add_argument("--max-channels", type=int, default=100)
    add.add_argument("--register", action="store_true", help="register to the carrier")
    trunks_sub.add_parser("list-platform", help="list platform trunks")
    args = parser.parse_args(argv)

    from switchboard import roles  # the heavy imports only once arguments are fine

    try:
        settings = _settings(args)
        if args.command == "dev":
            _run(roles.run_dev(settings))
        elif args.command == "api":
            _run(roles.run_api(settings))
        elif args.command == "media":
            _run(roles.run_media(settings))
        elif args.command == "router":
            _run(roles.run_router(settings))
        elif args.command == "worker":
            _run(roles.run_worker(settings))
        elif args.command == "migrate":
            done = _run(roles.run_migrate(settings))
            sys.stdout.write(f"migrations applied: {done or 'none (up to date)'}\n")
        elif args.command == "numbers":
            summary = _run(roles.import_numbers(settings, args.file, args.trunk))
            sys.stdout.write(summary + "\n")
        elif args.command == "trunks":
            sys.stdout.write(_run(roles.platform_trunks(settings, args)) + "\n")
        elif args.command == "keys":
            kid = _run(_rotate(settings))
            sys.stdout.write(
                f"new signing key {kid}; older keys verify until their tokens expire\n"
            )
    except SettingsError as exc:
        sys.stderr.write(f"switchboard: bad setting: {exc}\n")
        raise SystemExit(2) from None
    except roles.StartupError as exc:
        sys.stderr.write(f"switchboard: {exc}\n")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


async def _rotate(settings: Settings) -> str:
    from switchboard import roles

    async with roles.open_resources(settings, role="keys") as res:
        return await res.auth.rotate_keys()


if __name__ == "__main__":
    main()
