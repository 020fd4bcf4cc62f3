"""``loopline server`` as a user runs it (``python -m loopline server``): two processes on one
PostgreSQL store start each schedule slot and each event's run once and split the duties by
lease, handing them over on a graceful stop; HTTPS with a self-signed certificate; SIGTERM
finishes the request and the run in flight and exits 0; one TLS flag alone exits 5."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from loopline.app import Workspace
from loopline.cli.main import run
from loopline.core.runs import PipelineRun, RunState, RunTrigger
from loopline.store.lease_records import current
from loopline.store.runs import create_run, set_run_state

START_SECONDS = 120.0  # importing loopline takes ~25 s of a loaded 2-CPU machine, per process
WAIT_SECONDS = 60.0
EVERY_ROUND = ("rollouts", "alerts", "playbooks")  # duties ticked every round
DUTIES = ("rollouts", "monitoring", "alerts", "playbooks")

FLOW = '''
import os
import time
from pathlib import Path

from loopline import pipeline, task
from loopline.pipelines.schedules import Schedule, Trigger

HERE = Path(__file__).parent


@task(cache=False)
def record(label: str, seconds: float) -> str:
    (HERE / f"started-{label}").write_text(str(os.getpid()))
    time.sleep(seconds)
    with (HERE / "executed.log").open("a") as log:
        log.write(f"{label} {os.getpid()}\\n")
    return label


@pipeline(schedule=Schedule("* * * * *", catchup="all", parameters={"label": "slot"}),
          triggers=[Trigger(on="custom.ping", name="ping",
                            parameters={"label": "label", "seconds": "seconds"})])
def ping(label: str, seconds: float = 0.0):
    return record(label, seconds)
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A ``loopline server`` process and where it listens."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/api/v1"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """Send SIGTERM and return the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(WAIT_SECONDS)


@contextmanager
def _server(workspace: Workspace, name: str, *args: str) -> Iterator[Server]:
    """Run ``python -m loopline --workspace ROOT --db-url URL server ARGS`` until the end."""
    port = _free_port()
    log_path = workspace.root.parent / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "loopline", "--workspace", str(workspace.root), "--db-url",
             str(workspace.settings.db_url), "server", *args, "--port", str(port)],
            cwd=workspace.root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"})
        try:
            yield Server(process, port, log_path)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)


def _wait_until(what: str, done: Callable[[], bool], servers: tuple[Server, ...] = (),
                seconds: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        for server in servers:
            assert server.process.poll() is None, f"the server exited:\n{server.output()}"
        assert time.monotonic() < deadline, f"{what}: not within {seconds:g}s\n" + "\n".join(
            server.output() for server in servers)
        time.sleep(0.1)


def _healthy(server: Server, verify: ssl.SSLContext | bool = True,
             scheme: str = "http") -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(f"{server.url(scheme)}/health", verify=verify,
                             timeout=5).status_code == 200
        except httpx.TransportError:
            return False
    return check


def _wait_healthy(*servers: Server) -> None:
    _wait_until("health", lambda: all(_healthy(s)() for s in servers), servers, START_SECONDS)


def _flow(workspace: Workspace) -> Path:
    path = workspace.root / "flow.py"
    path.write_text(textwrap.dedent(FLOW))
    return path


def _emit(workspace: Workspace, label: str, seconds: float = 0.0) -> None:
    with workspace.store.write("tester") as uow:
        uow.emit("custom.ping", "test", {"label": label, "seconds": seconds})


def _cursor_placed(workspace: Workspace) -> bool:
    return any(c.subscriber == "scheduler" for c in workspace.store.events.cursors())


def _executed(workspace: Workspace) -> Counter[str]:
    path = workspace.root / "executed.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(line.split()[0] for line in lines)


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _seed_slot(workspace: Workspace, slot: datetime) -> None:
    """Record that ``ping``'s schedule fired ``slot`` (as a failed run: nothing to execute)."""
    stamp = slot.strftime("%Y-%m-%dT%H:%M:%SZ")
    trigger = RunTrigger(f"schedule:ping/default:{stamp}", "ping/default", "schedule", slot,
                         {"cron": "* * * * *", "timezone": "UTC"})
    with workspace.store.write("tester") as uow:
        run = create_run(uow, "ping", {"label": "slot"}, (), uow.now(), trigger)
        set_run_state(uow, run.id, RunState.FAILED, uow.now(), "seeded by the test")


def _runs(workspace: Workspace) -> list[PipelineRun]:
    return workspace.pipelines.runs.runs("ping", limit=1000)


def _holder_pid(workspace: Workspace, duty: str) -> int | None:
    """Return the pid of the process holding ``duty:<duty>`` now, if one does."""
    lease = current(workspace.store, f"duty:{duty}")
    if lease is None or lease.expires_at <= datetime.now(UTC):
        return None
    return int(lease.holder.split(":")[-2])


@pytest.fixture
def pg_workspace(tmp_path: Path, postgres_url: str) -> Iterator[Workspace]:
    workspace = Workspace.init(tmp_path / "ws", overrides={"db_url": postgres_url})
    try:
        yield workspace
    finally:
        workspace.close()


@pytest.fixture
def sqlite_workspace(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace.init(tmp_path / "ws")
    try:
        yield workspace
    finally:
        workspace.close()


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("LOOPLINE_TEST_POSTGRES_URL"),
                    reason="LOOPLINE_TEST_POSTGRES_URL is not set (CI sets it)")
def test_two_servers_on_one_store_start_each_slot_and_event_once_and_split_duties_by_lease(
        pg_workspace: Workspace) -> None:
    ws = pg_workspace
    flow = str(_flow(ws))
    seeded = _minute(datetime.now(UTC)) - timedelta(minutes=3)
    _seed_slot(ws, seeded)  # so the schedule has three missed slots to catch up at once
    labels = [f"event-{i}" for i in range(9)]
    holders: dict[str, set[int]] = {duty: set() for duty in DUTIES}

    def sample() -> None:
        for duty in DUTIES:
            pid = _holder_pid(ws, duty)
            if pid is not None:
                holders[duty].add(pid)

    with _server(ws, "a", flow, "--interval", "1") as a, \
            _server(ws, "b", flow, "--interval", "1") as b:
        _wait_healthy(a, b)
        _wait_until("the scheduler's event cursor", lambda: _cursor_placed(ws), (a, b))
        for burst in range(3):  # over a few rounds, so both servers poll while events arrive
            for label in labels[burst::3]:
                _emit(ws, label)
            time.sleep(0.7)

        def all_done() -> bool:
            sample()
            runs = _runs(ws)
            events = [r for r in runs if r.trigger and r.trigger.kind == "event"]
            slots = [r for r in runs if r.trigger and r.trigger.kind == "schedule"]
            return len(events) == len(labels) and len(slots) >= 4 and all(  # seed + 3
                r.state is not RunState.PENDING and r.state is not RunState.RUNNING
                for r in runs)

        _wait_until("every slot's and event's run finished", all_done, (a, b))
        pids = {a.process.pid: a, b.process.pid: b}
        assert all(holders[duty] <= set(pids) for duty in DUTIES), holders
        assert all(holders[duty] for duty in EVERY_ROUND), holders

        _wait_until("a holder of duty:rollouts", lambda: _holder_pid(ws, "rollouts") in pids,
                    (a, b))
        first = pids[_holder_pid(ws, "rollouts") or 0]  # a graceful stop hands duties on
        other = b if first is a else a
        assert first.stop() == 0, first.output()
        assert current(ws.store, "duty:rollouts") is None or \
            _holder_pid(ws, "rollouts") == other.process.pid  # released, or taken already
        _wait_until("the other server takes the duties over", lambda: all(
            _holder_pid(ws, duty) == other.process.pid for duty in EVERY_ROUND), (other,))
        assert other.stop() == 0, other.output()

    runs = _runs(ws)
    by_key = Counter(r.trigger.key for r in runs if r.trigger)
    assert set(by_key.values()) == {1}
    events = {str(r.parameters["label"]): r for r in runs if r.trigger
              and r.trigger.kind == "event"}
    assert sorted(events) == labels
    slots = sorted(r.trigger.scheduled_for for r in runs if r.trigger
                   and r.trigger.kind == "schedule" and r.state is not RunState.FAILED
                   and r.trigger.scheduled_for is not None)
    assert slots == [seeded + timedelta(minutes=i + 1) for i in range(len(slots))]
    assert {r.state for r in runs if r.trigger and r.trigger.scheduled_for != seeded} == {
        RunState.SUCCEEDED}
    executed = _executed(ws)  # each run's task executed once, in one of the processes
    assert executed == Counter({"slot": len(slots), **dict.fromkeys(labels, 1)})


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 and its key; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = folder / "server.crt", folder / "server.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return certfile, keyfile


def test_a_server_with_a_certificate_answers_https_verified_by_it(
        sqlite_workspace: Workspace, tmp_path: Path) -> None:
    certfile, keyfile = _self_signed(tmp_path)
    trusted = ssl.create_default_context(cafile=str(certfile))
    with _server(sqlite_workspace, "tls", "--ssl-certfile", str(certfile),
                 "--ssl-keyfile", str(keyfile), "--no-background") as server:
        _wait_until("https health", _healthy(server, trusted, "https"), (server,),
                    START_SECONDS)
        answer = httpx.get(f"{server.url('https')}/health", verify=trusted, timeout=5)
        assert answer.json()["status"] == "ok"
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused
            httpx.get(f"{server.url('https')}/health", timeout=5)
        with pytest.raises(httpx.TransportError):  # no plain HTTP on that port
            httpx.get(f"{server.url('http')}/health", timeout=5)
        assert "https://127.0.0.1" in server.output()
        assert all(current(sqlite_workspace.store, f"duty:{d}") is None for d in DUTIES)
        assert server.stop() == 0, server.output()


def _read_answer(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_sigterm_finishes_the_request_and_the_run_in_flight_then_exits_0(
        sqlite_workspace: Workspace) -> None:
    ws = sqlite_workspace
    secret = ws.tokens.create("ada", "admin")[1]
    body = json.dumps({"user": "late", "role": "viewer"}).encode()
    head = (f"POST /api/v1/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {secret}"
            f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    with _server(ws, "drain", str(_flow(ws)), "--interval", "0.2") as server:
        _wait_healthy(server)
        _wait_until("the scheduler's event cursor", lambda: _cursor_placed(ws), (server,))
        _emit(ws, "slow", seconds=4.0)
        _wait_until("the slow run's task started", (ws.root / "started-slow").exists, (server,))
        assert _healthy(server)()  # health answers while the run is in flight
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head + body[:5])  # a request in flight: its body is not all there
            time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert server.process.poll() is None, "the server did not wait for the request"
            sock.sendall(body[5:])
            answer = _read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["token"]["user"] == "late"
        assert server.process.wait(WAIT_SECONDS) == 0, server.output()
    assert _executed(ws)["slow"] == 1  # the run finished before the process exited
    [slow] = [r for r in _runs(ws) if r.parameters.get("label") == "slow"]
    assert slow.state is RunState.SUCCEEDED
    assert "stopped" in server.output()


def test_ssl_certfile_without_ssl_keyfile_exits_5_naming_the_missing_flag(
        sqlite_workspace: Workspace, tmp_path: Path) -> None:
    certfile, _ = _self_signed(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "loopline", "--workspace", str(sqlite_workspace.root), "server",
         "--ssl-certfile", str(certfile), "--port", str(_free_port())],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"})
    try:
        _, err = process.communicate(timeout=START_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert process.returncode == 5, err
    assert "invalid --ssl-keyfile: is needed with --ssl-certfile" in err.decode()


def _run_in_process(*args: str) -> int:
    """Run ``loopline ARGS`` in this process (as a process would) and return its exit status."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(SystemExit) as done:
            run(list(args))
    finally:  # the CLI's logging set-up must not outlive the call
        root.handlers[:] = handlers
        root.setLevel(level)
    return int(done.value.code or 0)


@pytest.mark.parametrize(("flag", "given"), [
    ("--ssl-certfile", ["--ssl-keyfile", "{key}"]),
    ("--ssl-certfile", ["--ssl-certfile", "{absent}", "--ssl-keyfile", "{key}"]),
    ("--ssl-keyfile", ["--ssl-certfile", "{cert}", "--ssl-keyfile", "{absent}"]),
    ("--ssl-certfile", ["--ssl-certfile", "{key}", "--ssl-keyfile", "{cert}"]),
], ids=["key-alone", "absent-cert", "absent-key", "swapped"])
def test_a_tls_flag_alone_a_missing_file_or_an_unusable_pair_exits_5_naming_the_flag(
        sqlite_workspace: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        flag: str, given: list[str]) -> None:
    certfile, keyfile = _self_signed(tmp_path)
    paths = {"cert": str(certfile), "key": str(keyfile), "absent": str(tmp_path / "absent")}
    code = _run_in_process("--workspace", str(sqlite_workspace.root), "server",
                           *(arg.format(**paths) for arg in given), "--port", "0")
    assert code == 5
    assert f"invalid {flag}" in capsys.readouterr().err
