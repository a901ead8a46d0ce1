"""``gateway bench``: throughput, latency, memory and scale-out of the gateway, measured
against a bare aiokafka loop and a per-event faust agent in one run on one embedded broker.

Modules:

* :mod:`gateway.bench.infra` -- deployments (policy, keys, topics), worker subprocesses,
  fast topic filling, reading topics to the end;
* :mod:`gateway.bench.baselines` -- the two comparison programs (run as subprocesses);
* :mod:`gateway.bench.latency` -- paced publishing and publish->agent-topic latency;
* :mod:`gateway.bench.harness` -- the run itself; :mod:`gateway.bench.report` -- the table.
"""
