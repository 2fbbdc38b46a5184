"""The benchmarks' processes beside the platform: the simulated cars, and a bare subscriber.

Cars are not on the platform's machine, so a benchmark runs them in a process of their own
(`python -m caas.bench.cars cars FLEET_FILE mqtt://host:port`): real vehicle agents
(`caas_sim.vehicle`), connected in batches. The bare subscriber
(`python -m caas.bench.cars subscriber mqtt://user:password@host:port`) counts the telemetry
the broker hands to a client that stores nothing: the telemetry benchmark's baseline.

Both talk to the benchmark in JSON lines: what they say on stdout starts with `LINE_PREFIX`
(anything else there is not for the benchmark); they read commands on stdin and end at `stop`
or when stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

from caas.core.logging import configure_logging
from caas.iot.bridge import NODELAY
from caas.iot.broker import BrokerAddress
from caas.protocol import mqtt
from caas_sim.vehicle.agent import BrokerEndpoint, VehicleAgent
from caas_sim.vehicle.fleet import Fleet, FleetFile

LINE_PREFIX = "caas-bench "


def say(**message: Any) -> None:
    print(LINE_PREFIX + json.dumps(message), flush=True)


async def commands() -> Any:
    """The benchmark's commands, one JSON object a line, until `stop` or the end of stdin."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        if command.get("command") == "stop":
            return
        yield command


# --- the cars ---------------------------------------------------------------------------------


async def _flood(agent: VehicleAgent, until: float, interval: float) -> tuple[int, int]:
    """Telemetry from one car until `until` (monotonic): every `interval` seconds, or as fast
    as the agent allows when 0; how many samples were offered and how many went out."""
    offered = sent = 0
    next_at = time.monotonic()
    while time.monotonic() < until:
        offered += 1
        if await agent.send_telemetry():
            sent += 1
        if interval > 0:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        else:
            await asyncio.sleep(0)  # let the other cars (and the socket) have their turn
    return offered, sent


async def run_cars(fleet_file: Path, broker_url: str) -> None:
    fleet = Fleet.from_file(FleetFile.read(fleet_file), BrokerEndpoint.from_url(broker_url))
    await fleet.start()
    say(event="online", count=fleet.online_count, cars=len(fleet))
    try:
        async for command in commands():
            if command["command"] == "telemetry":
                seconds, rate = float(command["seconds"]), float(command.get("rate") or 0)
                started = time.monotonic()
                results = await asyncio.gather(
                    *(
                        _flood(agent, started + seconds, 1 / rate if rate else 0.0)
                        for agent in fleet
                    )
                )
                say(
                    event="telemetry",
                    offered=sum(offered for offered, _ in results),
                    sent=sum(sent for _, sent in results),
                    seconds=time.monotonic() - started,
                )
            elif command["command"] == "online":
                say(event="online", count=fleet.online_count, cars=len(fleet))
    finally:
        await fleet.stop()


# --- the bare subscriber ----------------------------------------------------------------------


async def run_subscriber(service_url: str) -> None:
    """Count every car's telemetry as a client that does nothing else with it."""
    address = BrokerAddress.from_url(service_url)
    received = 0
    first = last = 0.0
    async with aiomqtt.Client(
        address.host,
        address.port,
        username=address.username,
        password=address.password,
        identifier=f"caas-bench-subscriber-{time.monotonic_ns()}",
        protocol=aiomqtt.ProtocolVersion.V311,
        socket_options=[NODELAY],
        max_queued_incoming_messages=0,
    ) as client:
        await client.subscribe(mqtt.TELEMETRY_FILTER, qos=mqtt.QOS_TELEMETRY)

        async def count() -> None:
            nonlocal received, first, last
            async for _ in client.messages:
                last = time.monotonic()
                if not received:
                    first = last
                received += 1

        counting = asyncio.create_task(count())
        say(event="subscribed")
        try:
            async for command in commands():
                if command["command"] == "count":
                    say(event="count", received=received, first=first, last=last)
        finally:
            counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counting


def main(argv: list[str]) -> None:
    configure_logging("json", "WARNING")  # on stderr: stdout is for the benchmark
    role, *rest = argv
    if role == "cars":
        asyncio.run(run_cars(Path(rest[0]), rest[1]))
    elif role == "subscriber":
        asyncio.run(run_subscriber(rest[0]))
    else:
        raise SystemExit(f"unknown role {role!r}: cars or subscriber")


if __name__ == "__main__":
    main(sys.argv[1:])
