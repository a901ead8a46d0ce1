"""The top level of ``gateway`` (and ``schemas``) is the pure core: importing it loads no
broker, database or web library and no edge subpackage, so the core runs and is tested
without Kafka, SQL or HTTP."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import gateway
import schemas

ROOT = Path(__file__).resolve().parent.parent

CORE = [
    "gateway.policy",
    "gateway.engine",
    "gateway.pipeline",
    "gateway.transforms",
    "gateway.crypto",
    "gateway.records",
    "gateway.consent",
    "gateway.events",
    "gateway.replay",
    "gateway.runtime",
    "gateway.keys",
    "gateway.taxonomy",
    "schemas.registry",
]
EDGE_LIBRARIES = {"faust", "mode", "aiokafka", "kafka", "sqlalchemy", "aiohttp"}
EDGE_PACKAGES = {"stream", "kafka", "ledger", "web", "cli", "sdk", "dev", "audit"}


def top_level_modules() -> list[str]:
    """Every module at the top of ``gateway`` and ``schemas`` (a new one is core too)."""
    found = [
        f"gateway.{m.name}"
        for m in pkgutil.iter_modules(gateway.__path__)
        if not m.ispkg and m.name != "__main__"  # __main__ is the command line: an edge
    ]
    found += [f"schemas.{m.name}" for m in pkgutil.iter_modules(schemas.__path__)]
    return found


def test_importing_the_core_loads_no_broker_database_or_web_library() -> None:
    modules = sorted(set(CORE) | set(top_level_modules()))
    assert set(CORE) <= set(modules)
    code = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    # A fresh interpreter: this one has loaded the edges already (other tests, plugins).
    done = subprocess.run(
        [sys.executable, "-c", code, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    loaded = json.loads(done.stdout)
    assert "gateway.engine" in loaded
    libraries = sorted(m for m in loaded if m.split(".")[0] in EDGE_LIBRARIES)
    assert libraries == [], f"the core imports an edge library: {libraries[:10]}"
    edges = sorted(
        m for m in loaded if m.startswith("gateway.") and m.split(".")[1] in EDGE_PACKAGES
    )
    assert edges == [], f"the core imports an edge subpackage: {edges}"
