"""Fault injection for the fault tests (`tests/faults`): `kill -9` at a named point.

A worker started with `CAAS_FAULT_KILL_AT=<point>` kills itself with SIGKILL when it reaches
`kill_point(<point>)`, as an operator's `kill -9` or the kernel's OOM killer would at the worst
moment: nothing is rolled back cleanly, no `finally` runs, the connections simply drop. The
tests use it to hit a window of a few microseconds deterministically (the money held but the
manifest not yet published, the car's `applied` stored but the money not yet taken), then start
a worker without it and check that nothing was lost or done twice.

Off unless the variable is set, and nothing but those tests sets it. The points, each of
which may be narrowed to one subject with `<point>:<subject>`:

- `ota.publish` (subject: the VIN): a configuration is about to go to the broker
  (`caas.ota.jobs`);
- `store.capture` (subject: the purchase's id): a purchase the car applied is about to be
  captured (`caas.store.purchases`);
- `store.captured` (the same): the provider has taken the money, the platform has not
  committed it yet.
"""

from __future__ import annotations

import os
import signal

KILL_AT_VARIABLE = "CAAS_FAULT_KILL_AT"


def kill_point(point: str, subject: object = "") -> None:
    """Die here, at once and uncleanly, when `CAAS_FAULT_KILL_AT` names `point` (or
    `point:subject`)."""
    wanted = os.environ.get(KILL_AT_VARIABLE)
    if wanted and wanted in (point, f"{point}:{subject}"):
        os.kill(os.getpid(), signal.SIGKILL)
