"""Development tools, never needed in production: the embedded Kafka broker (``broker``), the
local demo (``demo``), the sample event generator (``samples``) and the benchmark
(``bench``)."""
