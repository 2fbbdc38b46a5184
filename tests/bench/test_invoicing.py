"""`caas bench invoicing` at a tiny size: the month invoiced for every car, numbers gap-free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

KEYS = ("seconds", "invoices_per_s", "peak_rss_mb", "baseline_seconds", "ratio")


def test_invoicing_bench_invoices_every_car_with_gap_free_numbers(admin_url: str) -> None:
    env = {**os.environ, "CAAS_DATABASE_URL": admin_url, "CAAS_LOG_LEVEL": "WARNING"}
    command = [str(Path(sys.executable).with_name("caas")), "bench", "invoicing"]
    command += ["--cars", "20", "--events", "3", "--threads", "3", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    for key in KEYS:
        assert isinstance(result[key], int | float), key
    assert result["cars"] == 20
    assert result["invoices"] == result["payments_captured"] == 20
    assert result["gap_free"] is True
    # Five countries, four cars each: five series numbered 1..4.
    assert sorted(result["series"].values()) == [[1, 4, 4]] * 5
    assert result["seconds"] > 0 and result["invoices_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["gross_minor"] > 0
