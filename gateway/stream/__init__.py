"""The stream worker: the policy core on Kafka, with faust.

* :mod:`~gateway.stream.protocol` -- the at-least-once batch protocol (decide, log,
  disclose, changelog, acknowledge), over small interfaces; no faust in it.
* :mod:`~gateway.stream.sender` -- sending a batch's outputs until the broker acknowledged
  them (the one retry loop), on faust's aiokafka producer.
* :mod:`~gateway.stream.consent_store` -- the consent table and its changelog.
* :mod:`~gateway.stream.lane` -- faust's consumer with a batch lane: the input topic a
  fetched batch at a time into the protocol.
* :mod:`~gateway.stream.ledger_sink` -- the disclosure topic into the disclosure log store.
* :mod:`~gateway.stream.app` -- the faust app with its health and metrics pages.
* :mod:`~gateway.stream.metrics` -- the Prometheus metrics.
* :mod:`~gateway.stream.worker` -- starting it all (``gateway run``).
"""
