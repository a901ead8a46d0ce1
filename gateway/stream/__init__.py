"""The stream worker: the policy core on Kafka, with faust.

``batch`` holds the at-least-once, log-before-disclose batch logic (testable without
faust); ``app`` wires it into a faust app with the consent table; ``metrics`` holds the
Prometheus metrics; ``worker`` starts it all (``gateway run``).
"""
