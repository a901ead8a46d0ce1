"""Disclosure gateway: turns a privacy policy into enforcement on a Kafka stream.

The pure core (no Kafka, no database): ``taxonomy``, ``schemas`` (top-level package),
``policy``, ``transforms``, ``consent``, ``engine``, ``crypto``, ``records``, ``replay``.
I/O at the edges: ``stream`` (faust worker), ``sdk`` (publisher/agent), ``ledger`` (store),
``web`` (review page), ``cli``.
"""

__version__ = "0.1.0"
