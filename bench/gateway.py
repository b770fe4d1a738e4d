"""Gateway throughput: one gateway process polling ≥10,000 Modbus tags, publishing to a broker.

    python bench/gateway.py [--tags 10000] [--devices 40] [--poll-interval 1.0] [--seconds 20] [--json]
                            [--profile stacks.txt]   # gateway under py-spy (collapsed stacks)

Three processes, so the gateway's CPU and memory are its own:

1. this orchestrator starts a private Mosquitto (``ingest.localbroker``: free port;
   the shared broker is never loaded);
2. a *simulator* process serves ``--devices`` Modbus TCP register banks
   (``simulators.register_bank``, one port each, float32 input registers) and acts
   as ingest: it subscribes to the gateway's telemetry, counts points and acks
   every sequence, so the gateway's disk buffer drains as in production;
3. a *gateway* process runs :class:`gateway.Gateway` (full path: poll, decode,
   batch, SQLite store-and-forward with ``sync: full``, QoS 1 publish) and,
   after a warm-up, measures its own CPU (user+sys, all threads), points and
   RSS over ``--seconds``.

Fields of the last stdout line (one JSON object): ``points_per_s`` (points the
gateway published per second), ``received_per_s`` (points the subscriber got),
``cpu_s_per_100k_points`` (≤ 1.0 means 100k points/s fit in one core),
``cpu_cores`` (CPU seconds per wall second), ``rss_mb``, ``tags``, ``devices``,
``poll_interval``, ``publish_errors``, ``overruns``, ``device_failures``.
Numbers on the shared 2-core machine are noisy: run it twice and read both.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # run as a script: do not let bench/ shadow our packages

import argparse
import asyncio
import json
import resource
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

REGS_PER_TAG = 2  # float32


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _split(tags: int, devices: int) -> list[int]:
    base, extra = divmod(tags, devices)
    return [base + (1 if i < extra else 0) for i in range(devices)]


# --- simulator + fake ingest process -------------------------------------------------------
def serve(args: argparse.Namespace) -> None:
    """Serve the register banks and ack telemetry until SIGTERM; then print what was received."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fieldwatch.contract import encode_ack, topic
    from gateway.decode import encode
    from simulators.register_bank import RegisterBankServer

    counts = {"points": 0, "messages": 0}
    lock = threading.Lock()
    telemetry = topic(args.site, args.gateway, "telemetry")
    ack = topic(args.site, args.gateway, "ack")
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        import orjson

        obj = orjson.loads(m.payload)
        with lock:
            counts["points"] += len(obj["points"])
            counts["messages"] += 1
        c.publish(ack, encode_ack([obj["seq"]], ts=int(time.time() * 1000)), qos=1)

    client.on_message = on_message
    client.on_connect = lambda c, u, f, r, p: c.subscribe(telemetry, qos=1)
    client.connect("127.0.0.1", args.broker_port)
    client.loop_start()

    async def main() -> None:
        servers = []
        for i, n in enumerate(_split(args.tags, args.devices)):
            regs: dict[int, int] = {}
            for t in range(n):
                for j, r in enumerate(encode(float(i * 1000 + t) + 0.5, "float32", "ABCD")):
                    regs[t * REGS_PER_TAG + j] = r
            srv = RegisterBankServer("127.0.0.1", 0, input_registers=regs)
            await srv.start()
            servers.append(srv)
        print(json.dumps({"ports": [s.port for s in servers]}), flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        for s in servers:
            await s.stop()

    asyncio.run(main())
    client.loop_stop()
    with lock:
        print(json.dumps(counts), flush=True)


# --- gateway process ---------------------------------------------------------------------
def run_gateway(args: argparse.Namespace) -> None:
    """Run one gateway against the given ports; print its measurements as JSON."""
    import faulthandler
    import logging

    from gateway import Gateway, parse_config

    faulthandler.dump_traceback_later(args.seconds + args.warmup + 40, exit=True)  # a hang shows where

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    ports = [int(p) for p in args.ports.split(",")]
    devices = []
    for i, (port, n) in enumerate(zip(ports, _split(args.tags, args.devices), strict=True)):
        tags = [
            {"name": f"t{t}", "register": "input", "address": t * REGS_PER_TAG, "data_type": "float32"}
            for t in range(n)
        ]
        devices.append({"name": f"dev-{i}", "host": "127.0.0.1", "port": port, "timeout": 2.0, "tags": tags})
    config = parse_config(
        {
            "site": args.site,
            "gateway": args.gateway,
            "poll_interval": args.poll_interval,
            "state_dir": args.state_dir,
            "health_interval": 5.0,
            "devices": devices,
        }
    )

    async def main() -> dict[str, float]:
        gw = Gateway(config, f"mqtt://127.0.0.1:{args.broker_port}")
        async with gw:
            await gw.wait_connected()
            await asyncio.sleep(args.warmup)
            p0, e0 = gw.stats.points_published, gw.stats.publish_errors
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            await asyncio.sleep(args.seconds)
            t1 = time.monotonic()
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            points = gw.stats.points_published - p0
            rss = _rss_mb()
            health = gw.stats.devices.values()
            out = {
                "points": points,
                "wall_s": t1 - t0,
                "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
                "rss_mb": rss,
                "publish_errors": gw.stats.publish_errors - e0,
                "overruns": sum(d.overruns for d in health),
                "device_failures": sum(d.failures for d in health),
            }
        return out

    print(json.dumps(asyncio.run(main())), flush=True)


# --- orchestrator ------------------------------------------------------------------------
def orchestrate(args: argparse.Namespace) -> dict[str, object]:
    from ingest.localbroker import LocalMosquitto

    uid = uuid.uuid4().hex[:8]
    common = ["--site", f"s-{uid}", "--gateway", f"gw-{uid}", "--tags", str(args.tags), "--devices", str(args.devices)]
    me = [sys.executable, os.path.abspath(__file__)]
    with LocalMosquitto() as broker, tempfile.TemporaryDirectory(prefix="fw-bench-gw-") as state:
        common += ["--broker-port", str(broker.port)]
        sim = subprocess.Popen([*me, "--serve", *common], stdout=subprocess.PIPE, text=True)
        try:
            assert sim.stdout is not None
            ports = json.loads(sim.stdout.readline())["ports"]
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", "-r", "100", "-f", "raw"]
            profiler = [*spy, "-o", args.profile, "--"] if args.profile else []
            gw = subprocess.run(
                [
                    *profiler,
                    *me,
                    "--run-gateway",
                    *common,
                    "--ports",
                    ",".join(map(str, ports)),
                    "--poll-interval",
                    str(args.poll_interval),
                    "--seconds",
                    str(args.seconds),
                    "--warmup",
                    str(args.warmup),
                    "--state-dir",
                    state,
                ],
                capture_output=True,
                text=True,
                timeout=args.seconds + args.warmup + 60,
            )
            if gw.returncode != 0:
                raise SystemExit(f"gateway process failed:\n{gw.stderr[-3000:]}")
            m = json.loads(gw.stdout.strip().splitlines()[-1])
        finally:
            sim.send_signal(signal.SIGTERM)
            out, _ = sim.communicate(timeout=30)
        received = json.loads(out.strip().splitlines()[-1])
    wall = m["wall_s"]
    return {
        "bench": "gateway",
        "tags": args.tags,
        "devices": args.devices,
        "poll_interval": args.poll_interval,
        "seconds": round(wall, 2),
        "points_per_s": round(m["points"] / wall),
        "received_per_s_whole_run": round(received["points"] / (wall + args.warmup)),
        "cpu_s_per_100k_points": round(m["cpu_s"] / m["points"] * 100_000, 3) if m["points"] else None,
        "cpu_cores": round(m["cpu_s"] / wall, 3),
        "rss_mb": round(m["rss_mb"], 1),
        "publish_errors": m["publish_errors"],
        "overruns": m["overruns"],
        "device_failures": m["device_failures"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--devices", type=int, default=40)
    ap.add_argument("--poll-interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--profile", help="run the gateway under py-spy; collapsed stacks to this file")
    # internal: the child processes
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--run-gateway", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--site", help=argparse.SUPPRESS)
    ap.add_argument("--gateway", help=argparse.SUPPRESS)
    ap.add_argument("--broker-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ports", help=argparse.SUPPRESS)
    ap.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args)
    elif args.run_gateway:
        run_gateway(args)
    else:
        result = orchestrate(args)
        if not args.json:
            for k, v in result.items():
                print(f"{k:>28}: {v}")
        print(json.dumps(result))


if __name__ == "__main__":
    main()
