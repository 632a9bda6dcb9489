"""The ``parkgate`` command: services, the demo, and tools whose output is JSON lines.

Machine-readable output goes to stdout as one JSON object per line; logs and progress go to
stderr. Usage errors exit 2; a bad config file prints every error with its location and exits
78 (EX_CONFIG) before anything starts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from edge.errors import EdgeError
from parkgate import __version__
from parkgate.args import whole
from parkgate.broker import BrokerError
from parkgate.logs import setup_logging
from parkgate.postgres import PostgresError
from parkgate.settings import ConfigError

logger = logging.getLogger("parkgate")

EX_CONFIG = 78


def _plates(args: argparse.Namespace) -> int:
    from edge.errors import EngineUnavailable, ImageError
    from edge.images import load_image
    from edge.ocr import create_engine
    from edge.plate_format import PlateFormats
    from edge.plates import PlateReader

    try:
        formats = PlateFormats.from_patterns(args.format or [], chinese=not args.no_chinese)
    except re.error as err:
        print(f"parkgate plates: {err}", file=sys.stderr)
        return 2
    try:
        reader = PlateReader(create_engine(args.engine, threads=args.threads), formats=formats)
    except EngineUnavailable as err:
        print(f"parkgate plates: {err}", file=sys.stderr)
        return 1
    for name in args.images:
        started = time.perf_counter()
        try:
            image = load_image(name)
            reads = reader.read(image)
        except ImageError as err:
            out: dict[str, object] = {"file": name, "error": err.problem}
        else:
            best = reads[0] if reads else None
            out = {
                "file": name,
                "plate": best.text if best else None,
                "confidence": round(best.confidence, 4) if best else 0.0,
                "ms": round((time.perf_counter() - started) * 1000, 1),
                "box": list(best.box) if best else None,
                "kind": best.kind if best else None,
                "colour": best.colour if best else None,
                "stage": best.stage if best else None,
                "others": [
                    {
                        "plate": r.text,
                        "confidence": round(r.confidence, 4),
                        "box": list(r.box),
                        "kind": r.kind,
                        "colour": r.colour,
                    }
                    for r in reads[1:]
                ],
            }
        print(json.dumps(out, ensure_ascii=False), flush=True)
    return 0


def _service(args: argparse.Namespace) -> int:
    from parkgate import services

    runner = {
        "edge": services.run_edge,
        "collector": services.run_collector,
    }
    return runner[args.command](args.config)


def _bench_plates(args: argparse.Namespace) -> int:
    from bench.plates import run

    manifest = args.manifest or args.folder / "manifest.csv"
    return run(args.folder, manifest, args.engine or ["rapidocr"], threads=args.threads)


def _bench_faults(args: argparse.Namespace) -> int:
    from bench.faults import SCENARIOS, run

    scenarios = args.scenario or list(SCENARIOS)
    runs = {"broker_kill": args.broker_kills, "edge_kill": args.edge_kills, "network_cut": 1,
            "collector_kill": args.collector_kills}  # fmt: skip
    return run(
        scenarios, runs=runs, gates=args.gates, rate=args.rate, cut_events=args.cut_events, seed=args.seed
    )


def _bench_api(args: argparse.Namespace) -> int:
    from bench.api_load import run_args

    return run_args(args, "parkgate bench api")


def _bench_ingest(args: argparse.Namespace) -> int:
    from bench.ingest import run

    return run(
        events=args.events,
        collectors=args.collectors,
        db=args.db,
        rate=args.rate,
        gates=args.gates,
        lots=args.lots,
        publishers=args.publishers,
    )


def _simulate(args: argparse.Namespace) -> int:
    from parkgate.simulate import run

    return run(args)


def _speed(value: str) -> float | None:
    """``--speed``: simulated seconds per real second; 0 or ``max`` (None) is as fast as possible."""
    if value.strip().lower() == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        speed = math.nan
    if not math.isfinite(speed) or speed < 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a speed: give simulated seconds per real second (e.g. 1234), or 0 or 'max' "
            "for as fast as possible"
        )
    return speed or None


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _add_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = sub.add_parser(
        "simulate",
        help="replay a Wuhan-scale parking day through the real broker and collector",
        description="Makes a city (lots around Wuhan with a realistic size mix, 1-4 gates each, guidance screens "
        "showing nearby lots), plans a day of gate events along a city's daily curve (night trough, morning "
        "peak, midday plateau, evening peak; office, shopping, residential and hub lots each with their own), "
        "each car a valid plate with an entry and an exit after a stay, a full lot refusing entries; then "
        "sends the day through Mosquitto into the collector(s) and checks the database and the screens. "
        "Progress goes to stderr; the last stdout line is one JSON object {lots, spaces, events, stored, "
        "lost, duplicated, seconds, events_per_s, sim_hours, speed, occupancy_mismatches, "
        "peak_occupancy_ratio, screens, ...}. Exit 0 when nothing was lost or duplicated and every lot and "
        "screen ends as planned, 1 otherwise, 2 for bad options.",
    )
    sim.add_argument("--lots", type=whole(1), default=2000, metavar="N", help="car parks (default 2,000)")
    sim.add_argument(
        "--spaces",
        type=whole(1),
        default=600_000,
        metavar="N",
        help="spaces in all, split over the lots: many small, a few large (default 600,000)",
    )
    sim.add_argument(
        "--events",
        type=whole(1),
        default=700_000,
        metavar="N",
        help="entry and exit events in the day, exactly (default 700,000)",
    )
    sim.add_argument(
        "--screens", type=whole(0), default=200, metavar="N", help="guidance screens (default 200)"
    )
    sim.add_argument(
        "--speed",
        type=_speed,
        default=1234.0,
        metavar="X",
        help="simulated seconds per real second: 1 is real time, 1234 a day in 70 s (default); "
        "0 or 'max' as fast as the broker takes them",
    )
    sim.add_argument(
        "--collectors", type=whole(1), default=1, metavar="K", help="collector processes (default 1)"
    )
    sim.add_argument(
        "--db",
        metavar="URL",
        help="SQLAlchemy database URL, or 'postgres' for a temporary local PostgreSQL server "
        "(default: a fresh SQLite file in the workdir)",
    )
    sim.add_argument(
        "--publishers",
        type=whole(1),
        default=1,
        metavar="N",
        help="publisher processes playing the gates, whole lots each (default 1)",
    )
    sim.add_argument("--seed", type=int, default=1, help="seed of the city and the day (default 1)")
    sim.add_argument(
        "--date",
        type=_day,
        metavar="YYYY-MM-DD",
        help="the simulated day; event times are that day in Asia/Shanghai (default: yesterday)",
    )
    sim.add_argument(
        "--broker",
        metavar="HOST:PORT",
        help="use this running broker and its collector (started with the --config-only config; needs "
        "--db) instead of starting them",
    )
    sim.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep configs, database and logs here (default: a temporary folder, removed afterwards)",
    )
    sim.add_argument(
        "--config-only",
        action="store_true",
        help="only write the city's collector config to --workdir/collector.toml and print "
        "{config, lots, spaces, gates, screens}",
    )
    sim.set_defaults(func=_simulate)


def _demo(args: argparse.Namespace) -> int:
    from parkgate.demo import run_demo

    return run_demo(args)


def _db_error(err: Exception) -> str:
    """The driver's own message of a database error, without SQLAlchemy's SQL and links."""
    return f"{err.__class__.__name__}: {getattr(err, 'orig', None) or err}"


def _dashboard(args: argparse.Namespace) -> int:
    """``parkgate dashboard``: as the other services, and a database it cannot reach is one line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        from parkgate import services

        return services.run_dashboard(args.config)
    except SQLAlchemyError as err:
        print(f"parkgate dashboard: database: {_db_error(err)}", file=sys.stderr)
        return 1


def _read_password(args: argparse.Namespace, name: str) -> str:
    """One line from stdin (--password-stdin), else typed twice at the terminal, never echoed."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {name}: ")
    if getpass.getpass("the same again: ") != first:
        from dashboard.users import BadUserInput

        raise BadUserInput("the two passwords differ")
    return first


def _users(args: argparse.Namespace) -> int:
    """``parkgate users add|passwd|list|disable|enable``: operator accounts (dashboard/users.py)."""
    from sqlalchemy.exc import SQLAlchemyError

    from dashboard.config import DashboardConfig
    from dashboard.users import BadUserInput, UnknownUser, UserExists, UserStore
    from parkgate.settings import load_config

    database = args.database or (load_config(DashboardConfig, args.config).database if args.config else None)
    if not database:
        where = f"{args.config} has no database" if args.config else "give --config FILE or --database URL"
        print(f"parkgate users: which database? {where}", file=sys.stderr)
        return EX_CONFIG if args.config else 2
    actor = f"cli:{_login()}"
    try:
        store = UserStore(database)
    except SQLAlchemyError as err:
        print(f"parkgate users: database: {_db_error(err)}", file=sys.stderr)
        return 1
    try:
        if args.users == "list":
            for user in store.users():
                print(json.dumps(user.to_json(), ensure_ascii=False), flush=True)
            return 0
        if args.users == "add":
            user = store.add_user(
                args.name, _read_password(args, args.name), args.role, lots=args.lots, stations=args.stations
            )
            scope = f"role={user.role} lots={user.to_json()['lots']} stations={user.to_json()['stations']}"
            store.audit(actor, "user.add", target=user.name, detail=scope)
        elif args.users == "passwd":
            if store.user(args.name) is None:
                raise UnknownUser(args.name)
            user = store.set_password(args.name, _read_password(args, args.name))
            store.audit(actor, "user.passwd", target=user.name)
        else:
            user = store.set_active(args.name, args.users == "enable")
            store.audit(actor, f"user.{args.users}", target=user.name)
    except BadUserInput as err:
        print(f"parkgate users {args.users}: {err}", file=sys.stderr)
        return 2
    except (UserExists, UnknownUser) as err:
        print(f"parkgate users {args.users}: {err}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(user.to_json(), ensure_ascii=False), flush=True)
    return 0


def _add_users_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser(
        "users",
        help="operator accounts of the dashboard: add, passwd, list, disable, enable",
        description="Operator accounts live in the collector's database (the dashboard's `database`). Each "
        "command prints the account as one JSON line {name, role, lots, stations, active, created_at, "
        "last_login_at} (never the password or its hash) and writes the change to the audit trail. Exit 2 for "
        "a bad name, role, scope or password, 1 for a name that exists (add) or does not (the others).",
    )
    actions = users.add_subparsers(dest="users", required=True, metavar="ACTION")
    specs = {
        "add": "a new account; the password is asked twice (or one line on stdin with --password-stdin)",
        "passwd": "a new password; the account's open sessions end",
        "list": "every account, one JSON line each",
        "disable": "refuse the account's logins; its open sessions end",
        "enable": "allow the account's logins again",
    }
    for action, what in specs.items():
        p = actions.add_parser(action, help=what, description=f"{what[0].upper()}{what[1:]}.")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--config", type=Path, help="the dashboard's TOML config (its `database`)")
        where.add_argument("--database", metavar="URL", help="SQLAlchemy URL of the collector's database")
        if action != "list":
            p.add_argument("name", metavar="NAME", help="login name (letters, digits, _ . @ -; up to 64)")
        if action in ("add", "passwd"):
            p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if action == "add":
            p.add_argument("--role", required=True, choices=["viewer", "operator", "admin"])
            p.add_argument(
                "--lots", default="*", metavar="L1,L2", help="lot ids it may see (default * = all)"
            )
            p.add_argument(
                "--stations", default="*", metavar="S1,S2", help="inspection station ids (default * = all)"
            )
        p.set_defaults(func=_users)


def _aware_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time (2026-11-26T18:00:00+08:00)"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a time zone (e.g. +08:00 or Z)")
    return moment


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "unknown"


def _screens(args: argparse.Namespace) -> int:
    """``parkgate screens override|list``: operators' modes of guidance screens (cloud/screens.py)."""
    from cloud.config import CollectorConfig
    from cloud.events_store import open_engine
    from cloud.migrations import upgrade
    from cloud.screens import ScreenError, active_overrides, override_log, set_override
    from parkgate.settings import load_config

    cfg = load_config(CollectorConfig, args.config)
    engine = open_engine(cfg.database)
    try:
        upgrade(engine)
        if args.screens == "override":
            who = args.by or _login()
            found = [
                set_override(
                    engine, cfg, args.screen, args.mode, reason=args.reason, set_by=who, lot_id=args.lot,
                    until=args.until,
                )
            ]  # fmt: skip
        elif args.log:
            found = override_log(engine, args.screen, limit=args.log)
        else:
            found = [o for o in active_overrides(engine).values() if args.screen in (None, o.screen_id)]
    except ScreenError as err:
        print(f"parkgate screens {args.screens}: {err}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    for override in sorted(found, key=lambda o: o.id, reverse=bool(args.screens == "list" and args.log)):
        print(json.dumps(override.as_json(), ensure_ascii=False), flush=True)
    return 0


def _lots(args: argparse.Namespace) -> int:
    """``parkgate lots recalibrate``: a lot's count set to what an operator counted (cloud/visits.py)."""
    from sqlalchemy.exc import SQLAlchemyError

    from cloud.config import CollectorConfig
    from cloud.events_store import EventStore
    from cloud.visits import Visits, VisitsError, request_refresh
    from parkgate.settings import load_config

    cfg = load_config(CollectorConfig, args.config)
    try:
        store = EventStore(cfg.database)
    except SQLAlchemyError as err:
        print(f"parkgate lots: database: {_db_error(err)}", file=sys.stderr)
        return 1
    try:
        visits = Visits(store, cfg)
        adjustment, lot = visits.recalibrate(
            args.lot, args.occupied, args.by or f"cli:{_login()}", args.reason
        )
    except (VisitsError, ValueError) as err:  # unknown lot, beyond capacity, empty reason
        print(f"parkgate lots {args.lots}: {err}", file=sys.stderr)
        return 2
    except SQLAlchemyError as err:
        print(f"parkgate lots: database: {_db_error(err)}", file=sys.stderr)
        return 1
    finally:
        store.close()
    sent = request_refresh(cfg.mqtt, [lot.id])  # every collector re-publishes the lot and its screens
    out = {
        "lot": lot.id, "before": adjustment.before, "after": adjustment.after, "capacity": lot.capacity,
        "free": lot.free, "cause": adjustment.cause, "actor": adjustment.actor, "reason": adjustment.reason,
        "ts": adjustment.ts.isoformat(), "refresh_sent": sent,
    }  # fmt: skip
    print(json.dumps(out, ensure_ascii=False), flush=True)
    return 0


def _add_lots_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lots = sub.add_parser(
        "lots",
        help="lots' occupancy: recalibrate a count (audited)",
        description="Changes to a lot's occupancy made by an operator, written to the occupancy audit in the "
        "collector's database (cloud/visits.py); every collector is then asked to re-publish the lot.",
    )
    actions = lots.add_subparsers(dest="lots", required=True, metavar="ACTION")
    recal = actions.add_parser(
        "recalibrate",
        help="set a lot's count to what was counted on site",
        description="Prints one JSON line {lot, before, after, capacity, free, cause, actor, reason, ts, "
        "refresh_sent}; refresh_sent false means the broker was not reached (the collectors re-publish every "
        "republish_s anyway). Automatic reconciliation leaves the lot alone for its stale_visit_h afterwards. "
        "Exit 2 for an unknown lot, a count beyond 0..capacity or an empty reason, 1 if the database fails.",
    )
    recal.add_argument("--config", type=Path, required=True, help="the collector's TOML config file")
    recal.add_argument("lot", metavar="LOT", help="lot id")
    recal.add_argument("--occupied", type=int, required=True, metavar="N", help="vehicles counted inside")
    recal.add_argument("--reason", required=True, help="why (kept in the occupancy audit)")
    recal.add_argument("--by", help="who counted (default: cli:LOGIN)")
    recal.set_defaults(func=_lots)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parkgate",
        description="ParkGate: plate-reading parking and inspection gates, a city collector and a dashboard.",
        epilog="Each command has its own --help. JSON output goes to stdout, logs to stderr.",
    )
    parser.add_argument("--version", action="version", version=f"parkgate {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the whole system locally: broker, collector, dashboard and simulated gates",
        description="Starts Mosquitto on a free loopback port (unless --broker is given), the collector, the "
        "dashboard and an entry and an exit gate per lot, fed with generated camera frames (or --photos). "
        "Prints 'dashboard: URL'. Ctrl-C stops everything.",
    )
    demo.add_argument(
        "--photos", type=Path, help="folder of real photos to feed the gates instead of generated frames"
    )
    demo.add_argument(
        "--lots",
        type=int,
        default=3,
        choices=range(1, 9),
        metavar="N",
        help="number of lots (1-8, default 3)",
    )
    demo.add_argument("--broker", metavar="HOST:PORT", help="use this broker instead of starting one")
    demo.add_argument("--port", type=int, default=0, help="dashboard port (default: a free one)")
    demo.add_argument(
        "--interval", type=float, default=4.0, help="mean seconds between cars at each entry (default 4)"
    )
    demo.add_argument(
        "--workdir", type=Path, help="keep configs, database and logs here (default: a temp folder)"
    )
    demo.set_defaults(func=_demo)

    for name, what in (
        ("edge", "run a gate node: camera, plate reading, barrier, outbox, MQTT"),
        ("collector", "run the cloud collector: store events, publish availability"),
        ("dashboard", "serve the dashboard and the JSON API"),
    ):
        p = sub.add_parser(name, help=what, description=f"{what[0].upper()}{what[1:]}.")
        p.add_argument("--config", type=Path, required=name != "dashboard", help="TOML config file")
        p.set_defaults(func=_dashboard if name == "dashboard" else _service)

    plates = sub.add_parser(
        "plates",
        help="read plates in image files; one JSON line per image",
        description='Prints per image {"file", "plate" (or null), "confidence", "ms", "box" '
        '([x1,y1,x2,y2] or null), "kind", "colour", "stage", "others"}; an unusable file gives {"file", '
        '"error"} and the run goes on. "confidence" is calibrated: about the share of reads at that '
        "confidence that are exactly right.",
    )
    plates.add_argument("images", nargs="+", metavar="IMAGE")
    plates.add_argument("--engine", default="rapidocr", help="OCR engine: rapidocr (default) or easyocr")
    plates.add_argument(
        "--format",
        action="append",
        metavar="REGEX",
        help="a site plate format (regular expression on the upper-case text without separators); repeatable",
    )
    plates.add_argument(
        "--no-chinese", action="store_true", help="do not accept mainland Chinese formats (with --format)"
    )
    plates.add_argument(
        "--threads", type=int, default=0, help="inference threads (default: runtime's choice)"
    )
    plates.set_defaults(func=_plates)

    _add_simulate(sub)

    bench = sub.add_parser("bench", help="benchmarks that print figures as JSON lines")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    bplates = bench_sub.add_parser(
        "plates",
        help="plate-reading accuracy and speed against a manifest",
        description="Reads every image listed in the manifest (columns file, plate) and prints one JSON line "
        "per engine: exact_rate, char_accuracy, green_rate, per-group exact rates and p50/p95 ms, mean/p50/p95 "
        "ms, peak_rss_mb, stages, colours and a reliability table.",
    )
    bplates.add_argument("folder", type=Path, metavar="DIR")
    bplates.add_argument(
        "--manifest", type=Path, help="CSV with file,plate columns (default DIR/manifest.csv)"
    )
    bplates.add_argument(
        "--engine", action="append", help="engine to measure; repeat to compare (default rapidocr)"
    )
    bplates.add_argument(
        "--threads", type=int, default=0, help="inference threads (default: runtime's choice)"
    )
    bplates.set_defaults(func=_bench_plates)

    bfaults = bench_sub.add_parser(
        "faults",
        help="kill the broker, edges and collector, cut the network; count lost and duplicated events",
        description="Runs real Mosquitto, collector and edge processes (simulation mode), breaks one part again and "
        "again while events flow, then prints per scenario one JSON line {scenario, runs, events, stored, lost, "
        "duplicated, occupancy_error, seconds, drain_rate, write_rate}. Exits 1 if anything was lost or duplicated.",
    )
    bfaults.add_argument("--scenario", action="append", choices=["broker_kill", "edge_kill", "network_cut",
                         "collector_kill"], help="run only this scenario (repeatable; default all)")  # fmt: skip
    bfaults.add_argument("--broker-kills", type=int, default=20, help="broker SIGKILLs (default 20)")
    bfaults.add_argument("--edge-kills", type=int, default=100, help="edge SIGKILLs (default 100)")
    bfaults.add_argument("--collector-kills", type=int, default=20, help="collector SIGKILLs (default 20)")
    bfaults.add_argument(
        "--cut-events", type=int, default=10_000, help="events made while the network is cut"
    )
    bfaults.add_argument("--gates", type=int, default=2, help="edge processes (default 2)")
    bfaults.add_argument("--rate", type=float, default=200.0, help="events/s per gate (default 200)")
    bfaults.add_argument("--seed", type=int, default=1, help="seed for the random fault timing")
    bfaults.set_defaults(func=_bench_faults)

    bingest = bench_sub.add_parser(
        "ingest",
        help="events through the real broker into the collector(s): throughput and gate-to-screen latency",
        description="Publishes --events gate events (QoS 1) of a simulated city day (as parkgate simulate plans "
        "it: plates, entries and exits, a full lot refusing) from --gates gates of --lots lots, stamped with the "
        "time of sending, at --rate events/s or as fast as possible, into K collectors (shared subscription) "
        "writing to --db; prints one JSON line {events, stored, lost, duplicated, seconds, events_per_s, "
        "gate_to_screen_p50_ms, gate_to_screen_p99_ms}.",
    )
    bingest.add_argument("--events", type=int, default=100_000, help="events to send (default 100,000)")
    bingest.add_argument("--collectors", type=int, default=1, help="collector processes (default 1)")
    bingest.add_argument(
        "--db",
        help="SQLAlchemy database URL, or 'postgres' for a temporary local PostgreSQL server "
        "(default: a fresh SQLite file)",
    )
    bingest.add_argument("--rate", type=float, help="events/s (default: as fast as possible)")
    bingest.add_argument(
        "--gates", type=int, default=200, help="gates the events come from, at least one a lot (default 200)"
    )
    bingest.add_argument("--lots", type=int, default=100, help="lots (default 100)")
    bingest.add_argument(
        "--publishers",
        type=int,
        default=1,
        help="publisher processes playing the gates, whole lots each (default 1)",
    )
    bingest.set_defaults(func=_bench_ingest)

    from bench.api_load import build_parser as api_bench_options

    bapi = bench_sub.add_parser(
        "api",
        help="the availability API under load: wrk against the real dashboard server",
        description="Starts Mosquitto and the real `parkgate dashboard` on free loopback ports with --lots lots "
        "in its live state, then runs wrk against /api/v1/availability and /api/v1/availability/<lot> and prints "
        "per endpoint one JSON line {endpoint, requests_per_s, p50_ms, p99_ms, errors, ...} (medians of --runs).",
    )
    api_bench_options(bapi)
    bapi.set_defaults(func=_bench_api)

    screens = sub.add_parser(
        "screens",
        help="guidance screens: operator overrides (auto, full, closed, blank)",
        description="Operators' modes of guidance screens, kept in the collector's database with who, why, "
        "when and an optional expiry; the collector applies a change within about a second.",
    )
    screens_sub = screens.add_subparsers(dest="screens", required=True, metavar="ACTION")
    override = screens_sub.add_parser(
        "override",
        help="set a screen's (or one lot's row's) mode; mode auto ends an override",
        description="Prints the override recorded as one JSON line {id, screen, lot, mode, reason, set_by, "
        "set_at, until}. A screen-wide mode other than auto wins over the rows' own; full, closed and blank "
        "show the screen format's full text, closed text or nothing whatever the data says. Exit 2 for an "
        "unknown screen or lot, a bad mode, an empty reason or an expiry in the past.",
    )
    override.add_argument("--config", type=Path, required=True, help="the collector's TOML config file")
    override.add_argument("screen", metavar="SCREEN", help="screen id from the config")
    override.add_argument("--lot", help="only this lot's row of the screen (default: the whole screen)")
    override.add_argument("--mode", required=True, choices=["auto", "full", "closed", "blank"])
    override.add_argument("--reason", required=True, help="why (kept in the audit trail)")
    override.add_argument(
        "--until",
        type=_aware_time,
        metavar="ISO",
        help="end of the override, with a time zone (default: none)",
    )
    override.add_argument("--by", help="who sets it (default: the login name)")
    override.set_defaults(func=_screens)
    slist = screens_sub.add_parser(
        "list",
        help="the overrides in force, or with --log the changes newest first",
        description="One JSON line per override {id, screen, lot, mode, reason, set_by, set_at, until}.",
    )
    slist.add_argument("--config", type=Path, required=True, help="the collector's TOML config file")
    slist.add_argument("--screen", help="only this screen")
    slist.add_argument("--log", type=int, metavar="N", help="the last N changes (the audit trail) instead")
    slist.set_defaults(func=_screens)

    _add_users_commands(sub)
    _add_lots_commands(sub)

    from parkgate.gate_cli import add_gate_commands  # its handlers import gate_firmware lazily

    add_gate_commands(sub)

    from parkgate.qr_cli import add_qr_commands  # its handlers import the QR stack lazily

    add_qr_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, name=args.command)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"parkgate {args.command}: {err}", file=sys.stderr)
        return EX_CONFIG
    except (EdgeError, BrokerError, PostgresError) as err:  # a part that cannot start: say which, why
        print(f"parkgate {args.command}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
