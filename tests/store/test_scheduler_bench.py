"""`caas bench scheduler` runs end to end on a tiny size and prints its figures as the last
line: a smoke test of the benchmark's plumbing, not a speed target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_the_scheduler_bench_sweeps_a_day_and_prints_its_figures(admin_url: str) -> None:
    env = {**os.environ, "CAAS_DATABASE_URL": admin_url, "CAAS_LOG_LEVEL": "WARNING"}
    command = [str(Path(sys.executable).with_name("caas")), "bench", "scheduler"]
    done = subprocess.run(
        [*command, "--entitlements", "3000", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["seconds"] > 0 and result["peak_rss_mb"] > 0
    assert result["entitlements"] == 3000 and result["cars"] == 600
    # About 1/365 of the windows start in the day and as many end: some boundaries, each car
    # with one re-signed once (none had a configuration before).
    assert 0 < result["boundaries"] < 100
    assert result["configurations_signed"] == result["cars_swept"] == result["versions_stored"]
    per_second = result["boundaries"] / result["seconds"]
    assert result["boundaries_per_s"] == pytest.approx(per_second, rel=0.02, abs=0.1)
