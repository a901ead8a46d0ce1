"""``gateway bench``: throughput, latency, memory and scale-out of the gateway, measured
against a bare aiokafka loop and a per-event faust agent in one run on one embedded broker.

Modules:

* :mod:`gateway.dev.bench.infra` -- deployments (policy, keys, topics), worker subprocesses,
  fast topic filling, reading topics to the end;
* :mod:`gateway.dev.bench.baselines` -- the two comparison programs (run as subprocesses);
* :mod:`gateway.dev.bench.latency` -- paced publishing and publish->agent-topic latency;
* :mod:`gateway.dev.bench.harness` -- the run itself; :mod:`gateway.dev.bench.report` -- the table.
"""
