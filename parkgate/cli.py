"""The ``parkgate`` command: services, the demo, and tools whose output is JSON lines.

Machine-readable output goes to stdout as one JSON object per line; logs and progress go to
stderr. Usage errors exit 2; a bad config file prints every error with its location and exits
78 (EX_CONFIG) before anything starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edge.errors import EdgeError
from parkgate import __version__
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
        "dashboard": services.run_dashboard,
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


def _demo(args: argparse.Namespace) -> int:
    from parkgate.demo import run_demo

    return run_demo(args)


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
        p.set_defaults(func=_service)

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
        description="Publishes --events gate events (QoS 1) as many gates, at --rate events/s or as fast as "
        "possible, into K collectors (shared subscription) writing to --db; prints one JSON line {events, stored, "
        "lost, duplicated, seconds, events_per_s, gate_to_screen_p50_ms, gate_to_screen_p99_ms}.",
    )
    bingest.add_argument("--events", type=int, default=100_000, help="events to send (default 100,000)")
    bingest.add_argument("--collectors", type=int, default=1, help="collector processes (default 1)")
    bingest.add_argument(
        "--db",
        help="SQLAlchemy database URL, or 'postgres' for a temporary local PostgreSQL server "
        "(default: a fresh SQLite file)",
    )
    bingest.add_argument("--rate", type=float, help="events/s (default: as fast as possible)")
    bingest.add_argument("--gates", type=int, default=200, help="gates the events come from (default 200)")
    bingest.add_argument("--lots", type=int, default=100, help="lots (default 100)")
    bingest.add_argument(
        "--publishers", type=int, default=1, help="publisher processes playing the gates (default 1)"
    )
    bingest.set_defaults(func=_bench_ingest)

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
