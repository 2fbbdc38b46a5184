"""Benchmarks of the platform (`caas bench`): figures beside a baseline of the same run.

- `caas.bench.ota`: from the commit of a configuration change to the car's `applied` report
  stored by the platform, beside a raw MQTT QoS 1 round trip on the same broker;
- `caas.bench.telemetry`: telemetry stored per second beside what a bare subscriber receives;
- `caas.bench.api`: purchases per second through HTTP beside a trivial endpoint of the same
  server;
- `caas.bench.scheduler` and `caas.bench.invoicing`: one day's window boundaries, the first of
  the month's invoices;
- `caas.bench.memory`: the worker's resident memory with N cars connected beside none;
- `caas.bench.suite` and `caas.bench.summary`: `caas bench all`, each at N and 10 N, one table.

Each builds a scratch platform of its own (`caas.bench.harness`) and cleans up after it.
"""
