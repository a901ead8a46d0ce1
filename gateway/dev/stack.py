"""A local gateway to build against (``gateway dev up``): the embedded broker, a worker
(policy stream and ledger sink) and the review page, supervised as one stack.

One *supervisor* process owns the three: it starts the broker in its own main thread (the
broker dies with it), then the worker and the review page as child processes (they die
with it too), writes ``state.json`` once everything answers, and on SIGTERM or SIGINT
stops them in reverse order. ``gateway dev up`` runs the supervisor detached (the
default) or in the foreground; ``gateway dev down`` signals it.

Everything lives in the state directory (``.gateway/dev/`` next to the keys):

===================  ============================================================
``state.json``       the running stack: pids, addresses, topics (removed on stop)
``stack.json``       the ports chosen on the first ``up``, reused while free
``env``              ``GATEWAY_*`` variables for a shell: ``. .gateway/dev/env``
``reviewer.password`` the generated reviewer password (mode 0600)
``reviewer.hash``    its scrypt form, which is all the review page is given
``logs/``            supervisor, broker, worker and review page logs
===================  ============================================================

The keys and the ledger are the ordinary ones of the settings (``GATEWAY_KEYS_DIR``,
``GATEWAY_LEDGER_URL``), so every other ``gateway`` command works on the stack's data.
They survive a restart; the broker keeps topics in memory, so topics (and the consent
state kept in them) start empty after one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from gateway.errors import ConfigError, GatewayError
from gateway.keys import demo_agent_private_key, demo_publisher_keys_dir
from gateway.policy import Policy, load_policy
from gateway.runtime import ensure_demo_keys
from gateway.settings import Settings

REVIEWER_USER: Final = "reviewer"
PREFERRED_BROKER_PORT: Final = 9092
_START_TIMEOUT: Final = 90.0  # the worker's first start imports faust and joins a group
_STOP_GRACE: Final = 15.0
# The detached supervisor's argument: `python -m gateway.dev.stack --supervise`.
SUPERVISOR_MARK: Final = "--supervise"


# --- files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackPaths:
    dir: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> StackPaths:
        return cls((settings.keys_dir.parent / "dev").absolute())

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def config(self) -> Path:
        return self.dir / "stack.json"

    @property
    def env(self) -> Path:
        return self.dir / "env"

    @property
    def password(self) -> Path:
        return self.dir / "reviewer.password"

    @property
    def password_hash(self) -> Path:
        return self.dir / "reviewer.hash"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)  # readers never see half a file


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise GatewayError(f"cannot read {path}: {e}; remove it and run `gateway dev up`") from e


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


# --- what `up` prepares before starting anything -------------------------------------------


@dataclass
class Prepared:
    """What ``up`` made sure of before starting the stack."""

    created: list[str]
    password: str | None  # the new reviewer password; None when one existed already
    ports: dict[str, int]


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _any_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _choose_ports(paths: StackPaths, settings: Settings) -> dict[str, int]:
    """The ports of the last run while free (addresses in developers' configs stay valid),
    else the usual ones, else any free port."""
    saved = _read_json(paths.config) or {}
    preferred = {
        "broker": PREFERRED_BROKER_PORT,
        "worker": settings.web_port,
        "review": settings.review_port,
    }
    ports: dict[str, int] = {}
    for name, usual in preferred.items():
        for candidate in (saved.get(name), usual):
            if not isinstance(candidate, int) or candidate in ports.values():
                continue
            if _port_free(candidate):
                ports[name] = candidate
                break
        else:
            ports[name] = _any_free_port()
    _write_json(paths.config, ports)
    return ports


def prepare(settings: Settings, paths: StackPaths) -> Prepared:
    """Create what is missing (state directory, keys, reviewer password) and choose ports."""
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(exist_ok=True)
    policy = load_policy(settings.policy_path)
    created = ensure_demo_keys(settings, policy)
    password = None
    if not paths.password.exists() or not paths.password_hash.exists():
        from gateway.web.auth import hash_password

        # 144 random bits, in characters a terminal copies without surprises.
        password = secrets.token_urlsafe(18)
        _write_private(paths.password, password + "\n")
        _write_private(paths.password_hash, hash_password(password) + "\n")
        created.append(f"reviewer password in {paths.password}")
    return Prepared(created, password, _choose_ports(paths, settings))


def reviewer_password(paths: StackPaths) -> str:
    """The generated reviewer password (from its 0600 file)."""
    try:
        return paths.password.read_text().strip()
    except FileNotFoundError:
        raise GatewayError(
            f"no reviewer password in {paths.password}: run `gateway dev up`"
        ) from None


# --- the state of a running stack ----------------------------------------------------------


@dataclass
class Proc:
    pid: int
    cmdline: list[str]


@dataclass
class StackState:
    supervisor: Proc
    bootstrap: str
    health_url: str
    review_url: str
    reviewer_user: str
    topics: dict[str, int]
    input_topic: str
    dead_letter_topic: str
    agent_topics: dict[str, str]
    keys_dir: str
    gateway_public_key: str
    agent_private_keys: dict[str, str]
    publisher_keys: list[str]
    ledger_url: str
    logs: str
    env_file: str
    started_at: str
    status: str = "starting"  # starting | ready | failed
    ready_after: float | None = None
    error: str | None = None
    processes: dict[str, Proc] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackState:
        data = dict(data)
        data["supervisor"] = Proc(**data["supervisor"])
        data["processes"] = {k: Proc(**v) for k, v in data.get("processes", {}).items()}
        return cls(**data)


def read_state(paths: StackPaths) -> StackState | None:
    data = _read_json(paths.state)
    if data is None:
        return None
    try:
        return StackState.from_json(data)
    except (TypeError, KeyError) as e:
        raise GatewayError(
            f"{paths.state} is not a stack state ({e}); remove it and run `gateway dev up`"
        ) from e


def _cmdline(pid: int) -> list[str] | None:
    """The command line of a live process; None when it is gone (or not ours to see)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        # No /proc (not Linux): only whether the pid is alive can be told.
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def alive(proc: Proc) -> bool:
    """Whether ``proc`` still runs: its pid is alive with the command line recorded."""
    seen = _cmdline(proc.pid)
    if seen is None:
        return False
    return not seen or seen == proc.cmdline


# --- the supervisor -------------------------------------------------------------------------


class _Stop(Exception):
    """A stop was requested (SIGTERM or SIGINT)."""


def _get(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


class Supervisor:
    """Starts the stack, records it in ``state.json``, and stops it on a signal or when a
    part of it exits."""

    def __init__(
        self,
        settings: Settings,
        paths: StackPaths,
        ports: dict[str, int],
        *,
        on_ready: Callable[[StackState], None] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.paths = paths
        self.ports = ports
        self.on_ready = on_ready
        self.log = log or _log_line
        self.policy: Policy = load_policy(settings.policy_path)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._broker: Any = None
        self._stopping = False
        self.state: StackState | None = None

    def _signal(self, signum: int, frame: Any) -> None:
        # Only a flag: the start-up and the watch loop check it between steps, so a stop
        # never interrupts a step half done (a child started but not yet recorded).
        self._stopping = True

    def _check_stop(self) -> None:
        if self._stopping:
            raise _Stop

    def run(self) -> int:
        """Run until stopped; the exit status (0 after a requested stop)."""
        started = time.monotonic()
        previous = {s: signal.signal(s, self._signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            state = self._start(started)
            self.log(f"stack ready after {state.ready_after:.1f}s")
            if self.on_ready is not None:
                self.on_ready(state)
            while True:
                self._check_children("")
                self._check_stop()
                time.sleep(0.5)
        except _Stop:
            self.log("stopping on request")
            return 0
        except Exception as e:  # any failure: recorded for `dev up`, then everything stops
            error = str(e) if isinstance(e, GatewayError) else f"{type(e).__name__}: {e}"
            self.log(f"error: {error}")
            if self.state is not None:
                # Kept for `dev up`, which reads the error from it.
                self.state.status, self.state.error = "failed", error
                with contextlib.suppress(OSError):
                    _write_json(self.paths.state, asdict(self.state))
            return 1
        finally:
            # A second signal while stopping must not cut the shutdown short.
            for s in previous:
                signal.signal(s, signal.SIG_IGN)
            self._stop_all()
            if self.state is None or self.state.status != "failed":
                with contextlib.suppress(FileNotFoundError):
                    self.paths.state.unlink()
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.log("stopped")

    def _start(self, started: float) -> StackState:
        from gateway.dev.broker import EmbeddedBroker
        from gateway.ledger import open_store

        state = self.state = self._initial_state()
        _write_json(self.paths.state, asdict(state))
        # The review page opens only an existing ledger; made here, it can start alongside
        # the worker instead of after it.
        open_store(absolute_ledger_url(self.settings.ledger_url)).close()

        self.log("starting the embedded broker")
        broker = EmbeddedBroker(port=self.ports["broker"], log_dir=self.paths.logs / "broker")
        self._broker = broker.start()
        state.processes["broker"] = Proc(broker.pid, _cmdline(broker.pid) or [])
        _write_json(self.paths.state, asdict(state))
        self._check_stop()

        self.log("starting the gateway worker and the review page")
        worker = self._spawn(
            "worker",
            [sys.executable, "-m", "gateway", "run", "--role", "all"],
            {
                "GATEWAY_BOOTSTRAP_SERVERS": broker.bootstrap,
                "GATEWAY_WEB_PORT": str(self.ports["worker"]),
                "GATEWAY_WEB_HOST": "127.0.0.1",
            },
        )
        state.processes["worker"] = Proc(worker.pid, _cmdline(worker.pid) or [])
        review = self._spawn(
            "review",
            [sys.executable, "-m", "gateway", "review", "--port", str(self.ports["review"])],
            {
                "GATEWAY_REVIEWER_USER": REVIEWER_USER,
                "GATEWAY_REVIEWER_PASSWORD": self.paths.password_hash.read_text().strip(),
                "GATEWAY_REVIEW_HOST": "127.0.0.1",
            },
        )
        state.processes["review"] = Proc(review.pid, _cmdline(review.pid) or [])
        _write_json(self.paths.state, asdict(state))
        # The worker creates the topics before its health page answers.
        self._wait("the worker's health page", lambda: _get(state.health_url) == 200)
        self._wait("the review page", lambda: _get(state.review_url + "login") == 200)
        state.topics = _topics(broker.bootstrap)

        state.status = "ready"
        state.ready_after = round(time.monotonic() - started, 2)
        _write_json(self.paths.state, asdict(state))
        self._write_env(state)
        return state

    def _initial_state(self) -> StackState:
        s = self.settings
        bootstrap = f"127.0.0.1:{self.ports['broker']}"
        publishers = demo_publisher_keys_dir(s.keys_dir)
        return StackState(
            supervisor=Proc(os.getpid(), _cmdline(os.getpid()) or []),
            bootstrap=bootstrap,
            health_url=f"http://127.0.0.1:{self.ports['worker']}/health",
            review_url=f"http://127.0.0.1:{self.ports['review']}/",
            reviewer_user=REVIEWER_USER,
            topics={},
            input_topic=s.input_topic,
            dead_letter_topic=s.dead_letter_topic,
            agent_topics={name: a.topic for name, a in self.policy.agents.items()},
            keys_dir=str(s.keys_dir.absolute()),
            gateway_public_key=str(s.signing_public_key_path.absolute()),
            agent_private_keys=demo_agent_keys(s, self.policy),
            publisher_keys=sorted(str(p.absolute()) for p in publishers.glob("*"))
            if publishers.is_dir()
            else [],
            ledger_url=s.ledger_url,
            logs=str(self.paths.logs),
            env_file=str(self.paths.env),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str]) -> subprocess.Popen:
        from gateway.dev.broker import _die_with_parent  # the broker's own safety net

        env = {**os.environ, **settings_env(self.settings), **extra_env}
        log_path = self.paths.logs / f"{name}.log"
        with log_path.open("ab") as log:
            log.write(f"--- {datetime.now(UTC).isoformat()} {' '.join(argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches only the supervisor
                preexec_fn=_die_with_parent(),
            )
        self._children[name] = child
        return child

    def _write_env(self, state: StackState) -> None:
        lines = {
            "GATEWAY_BOOTSTRAP_SERVERS": state.bootstrap,
            **settings_env(self.settings),
            # `gateway publish` signs each event as its demo publisher with these.
            "GATEWAY_PUBLISHER_KEYS": str(
                demo_publisher_keys_dir(self.settings.keys_dir).absolute()
            ),
        }
        self.paths.env.write_text(
            "# The local stack's settings: `. "
            + str(self.paths.env)
            + "` in a shell\n"
            + "".join(f"export {k}={_shell_quote(v)}\n" for k, v in lines.items())
        )

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while not ready():
            self._check_children(f" while waiting for {what}")
            self._check_stop()
            if time.monotonic() > deadline:
                raise GatewayError(
                    f"timed out after {_START_TIMEOUT:.0f}s waiting for {what}; logs in "
                    f"{self.paths.logs}"
                )
            time.sleep(0.2)

    def _check_children(self, during: str) -> None:
        for name, child in self._children.items():
            if child.poll() is not None:
                raise GatewayError(
                    f"the {name} exited (code {child.returncode}){during}; see "
                    f"{self.paths.logs / (name + '.log')}"
                )

    def _stop_all(self) -> None:
        for name in reversed(list(self._children)):
            _terminate(self._children[name])
        self._children.clear()
        if self._broker is not None:
            self._broker.stop()
            self._broker = None


def _topics(bootstrap: str) -> dict[str, int]:
    """The broker's topics and their partition counts (faust's internal ones left out)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=[bootstrap])
    try:
        names = sorted(t for t in consumer.topics() if "__" not in t)
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in names}
    finally:
        consumer.close()


def _log_line(line: str) -> None:
    print(f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {line}", flush=True)


def _terminate(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(_STOP_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings every process of the stack shares, paths made absolute."""
    s = settings
    return {
        "GATEWAY_POLICY_PATH": str(s.policy_path.absolute()),
        "GATEWAY_KEYS_DIR": str(s.keys_dir.absolute()),
        "GATEWAY_LEDGER_URL": absolute_ledger_url(s.ledger_url),
        "GATEWAY_INPUT_TOPIC": s.input_topic,
        "GATEWAY_DISCLOSURE_TOPIC": s.disclosure_topic,
        "GATEWAY_DEAD_LETTER_TOPIC": s.dead_letter_topic,
        "GATEWAY_PARTITIONS": str(s.partitions),
    }


def absolute_ledger_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (children and later commands may
    run elsewhere)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        path, sep, query = rest.partition("?")
        return prefix + str(Path(path).absolute()) + sep + query
    return url


def demo_agent_keys(settings: Settings, policy: Policy) -> dict[str, str]:
    """Where each demo agent's private key is (for agents whose public key is a file in the
    keys directory, which the stack created when missing)."""
    out = {}
    for name in policy.agents:
        private = demo_agent_private_key(settings.keys_dir, name)
        if private.exists():
            out[name] = str(private.absolute())
    return out


# --- starting and stopping from the command line --------------------------------------------


def running(paths: StackPaths) -> StackState | None:
    """The state of the stack if its supervisor runs; a stale state file is removed."""
    state = read_state(paths)
    if state is None:
        return None
    if alive(state.supervisor):
        return state
    leftovers = [p for p in state.processes.values() if alive(p)]
    if not leftovers:
        with contextlib.suppress(FileNotFoundError):
            paths.state.unlink()
        return None
    return state  # parts outlived their supervisor: `down` cleans them up


def start_detached(
    settings: Settings, paths: StackPaths, timeout: float = _START_TIMEOUT
) -> StackState:
    """Start the supervisor in the background and return once the stack is ready."""
    log_path = paths.logs / "stack.log"
    with contextlib.suppress(FileNotFoundError):
        paths.state.unlink()  # a failed run's state
    env = {**os.environ, **settings_env(settings)}
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "gateway.dev.stack", SUPERVISOR_MARK],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # detached: outlives this command and its terminal
        )
    deadline = time.monotonic() + timeout + 30
    while True:
        state = read_state(paths)
        if state is not None and state.supervisor.pid == child.pid:
            if state.status == "ready":
                return state
            if state.status == "failed":
                raise GatewayError(f"the stack did not start: {state.error}")
        code = child.poll()
        if code is not None:
            raise GatewayError(
                f"the stack did not start (exit code {code}); see {log_path}:\n" + _tail(log_path)
            )
        if time.monotonic() > deadline:
            raise GatewayError(f"the stack did not become ready in time; see {log_path}")
        time.sleep(0.2)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(paths: StackPaths, timeout: float = 40.0) -> bool:
    """Stop the stack; False when none was running."""
    state = read_state(paths)
    if state is None:
        return False
    if alive(state.supervisor):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.supervisor.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(state.supervisor) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(state.supervisor):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.supervisor.pid, signal.SIGKILL)
    # Whatever outlived the supervisor (killed, or crashed): its recorded children.
    for proc in state.processes.values():
        if alive(proc):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        paths.state.unlink()
    return True


def check_not_running(paths: StackPaths) -> None:
    """Refuse to start a second stack; clean up what a dead supervisor left behind."""
    state = running(paths)
    if state is not None and not alive(state.supervisor):
        stop(paths)
    elif state is not None:
        raise ConfigError(
            f"a local stack is already running (supervisor pid {state.supervisor.pid}, "
            f"broker {state.bootstrap}): `gateway dev status` shows it, `gateway dev down` "
            "stops it"
        )


def _supervise() -> int:
    """The detached supervisor: settings from the environment ``start_detached`` gave it,
    ports from the stack's ``stack.json``."""
    settings = Settings()
    paths = StackPaths.for_settings(settings)
    ports = _read_json(paths.config)
    if not isinstance(ports, dict):
        raise SystemExit(f"no ports in {paths.config}: start the stack with `gateway dev up`")
    return Supervisor(settings, paths, ports).run()


if __name__ == "__main__":
    if sys.argv[1:] != [SUPERVISOR_MARK]:
        raise SystemExit("started by `gateway dev up`; run that instead")
    sys.exit(_supervise())
