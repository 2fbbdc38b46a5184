"""Benchmarks of the connected car (`caas bench`): figures beside a baseline of the same run.

- `caas.bench.ota`: from the commit of a configuration change to the car's `applied` report
  stored by the platform, beside a raw MQTT QoS 1 round trip on the same broker;
- `caas.bench.telemetry`: telemetry stored per second beside what a bare subscriber receives.

Both build a scratch platform of their own (`caas.bench.harness`) and clean up after it.
"""
