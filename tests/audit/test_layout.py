"""Only the snapshot module talks to Kafka and SQL: the comparison, the replay and the
report (and so the package itself) import no Kafka or SQL library."""

from __future__ import annotations

import subprocess
import sys

import orjson

CLIENTS = ("kafka", "aiokafka", "sqlalchemy")

# Run in a fresh interpreter: argv[1] is the module to import, the rest the clients.
_PROBE = """
import importlib, sys, orjson
module, clients = sys.argv[1], set(sys.argv[2:])
loaded = lambda: sorted({m.split(".")[0] for m in sys.modules} & clients)
importlib.import_module(module)
before = loaded()
import gateway.kafka.read  # an edge module: it does load a client
print(orjson.dumps([before, loaded()]).decode())
"""


def loaded_by(module: str) -> tuple[list[str], list[str]]:
    """The client libraries loaded by importing ``module`` in a fresh interpreter, and
    those loaded once the Kafka reader is imported too (proof that the probe sees one)."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *CLIENTS],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    before, after = orjson.loads(out.stdout)
    return before, after


def test_the_comparison_imports_no_kafka_or_sql_library() -> None:
    before, after = loaded_by("gateway.audit.comparison")
    assert before == []
    assert "kafka" in after


def test_the_audit_package_imports_no_kafka_or_sql_library() -> None:
    before, _ = loaded_by("gateway.audit")
    assert before == []
