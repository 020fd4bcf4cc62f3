"""The load generator of ``benchmarks/serving.py``: a lean HTTP/1.1 client, open and closed loops.

The client is raw asyncio (uvloop) over keep-alive connections, one request in flight per
connection: a prebuilt request is written, the answer is read up to its ``Content-Length``.
It costs far less CPU per request than a general client, so the servers, not the client, set
the figures (``trivial_server`` measures the client's own ceiling against a server that only
returns canned bytes).

Open loop: requests are due on a fixed timetable (``rate`` per second) whatever happens to
earlier ones. A pacer thread sleeps to each due time (``time.sleep`` is precise to tens of
microseconds; the event loop's timers round to milliseconds) and hands the request to the loop;
a free connection is taken from a pool, a new one opened if none is free (counted), so the
client never queues. Latency runs from the *due* time to the last byte of the answer, so a
slow answer delays no later measurement (no coordinated omission); ``send_lag`` says how late
the client itself was. Closed loop: ``concurrency`` connections each send the next request as
soon as the previous answer arrives; throughput is answers per second.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

CONNECT_TIMEOUT = 10.0
ANSWER_TIMEOUT = 30.0
CANNED = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 19\r\n\r\n"
          b'{"predictions":[0]}')


def build_request(path: str, body: bytes, host: str) -> bytes:
    """Return the bytes of one keep-alive ``POST path`` with a JSON ``body``."""
    return (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer: status (0 when the connection failed), raw header block and body."""

    status: int
    head: bytes
    body: bytes

    def header(self, name: bytes) -> str | None:
        """Return the value of header ``name`` (lower case), or None."""
        start = self.head.lower().find(b"\r\n" + name + b":")
        if start < 0:
            return None
        start += len(name) + 3
        end = self.head.find(b"\r\n", start)
        return self.head[start:end if end >= 0 else None].strip().decode()


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Answer] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (uvloop sets TCP_NODELAY)."""
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Complete the waiting request once its whole answer has arrived."""
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._waiter is None:
            return
        head = bytes(self._buffer[:end])
        lowered = head.lower()
        at = lowered.find(b"\r\ncontent-length:")
        if at < 0:
            self._fail(ConnectionError("an answer without content-length"))
            return
        stop = lowered.find(b"\r\n", at + 2)
        length = int(lowered[at + 17:stop if stop >= 0 else None])
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        body = bytes(self._buffer[end + 4:total])
        del self._buffer[:total]
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result(Answer(int(head[9:12]), head, body))

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the request in flight, if any."""
        self.closed = True
        self._fail(exc or ConnectionError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        """Write ``request``; return the future of its answer."""
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()


async def connect(port: int) -> Connection:
    """Open one connection to 127.0.0.1:``port``."""
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(Connection, "127.0.0.1", port), CONNECT_TIMEOUT)
    return protocol


async def exchange(connection: Connection, request: bytes) -> Answer:
    """Send ``request`` and return its answer (status 0 when the connection failed)."""
    try:
        return await asyncio.wait_for(connection.send(request), ANSWER_TIMEOUT)
    except (TimeoutError, OSError):
        connection.close()
        return Answer(0, b"", b"")


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """Return count, p50, p95, p99 and max of ``seconds``, in milliseconds."""
    ordered = sorted(seconds)
    if not ordered:
        return {"count": 0}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000, 3)

    return {"count": len(ordered), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(ordered[-1] * 1000, 3)}


class CpuMeter:
    """CPU seconds used by this process and by a server process, over a span of wall time."""

    def __init__(self, server_pid: int | None) -> None:
        self._pid = server_pid
        self._start = self._read()

    def _server_cpu(self) -> float | None:
        if self._pid is None:
            return None
        try:
            with open(f"/proc/{self._pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _read(self) -> tuple[float, float, float | None]:
        return time.perf_counter(), time.process_time(), self._server_cpu()

    def shares(self) -> dict[str, float | None]:
        """Return CPU seconds per wall second of the client and the server since creation."""
        wall, client, server = self._read()
        span = max(wall - self._start[0], 1e-9)
        server_share = None
        if server is not None and self._start[2] is not None:
            server_share = round((server - self._start[2]) / span, 3)
        return {"client_cpu_share": round((client - self._start[1]) / span, 3),
                "server_cpu_share": server_share}


# -- closed loop ---------------------------------------------------------------------------------


async def closed_loop(port: int, requests: Sequence[bytes], concurrency: int, seconds: float,
                      server_pid: int | None = None) -> dict[str, Any]:
    """Keep ``concurrency`` requests in flight for ``seconds``; return throughput and latency."""
    connections = [await connect(port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    meter = CpuMeter(server_pid)
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(offset: int, connection: Connection) -> None:
        nonlocal errors
        index = offset
        while time.perf_counter() < deadline and not connection.closed:
            sent = time.perf_counter()
            answer = await exchange(connection, requests[index % len(requests)])
            latencies.append(time.perf_counter() - sent)
            errors += answer.status != 200
            index += concurrency

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(connections)))
    took = time.perf_counter() - start
    for connection in connections:
        connection.close()
    return {"concurrency": concurrency, "seconds": round(took, 3),
            "requests_per_s": round(len(latencies) / took, 1), "errors": errors,
            "latency": percentiles(latencies), **meter.shares()}


# -- open loop -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """One open-loop request: when it was due, sent and answered, and what answered it."""

    due: float
    sent: float
    done: float
    status: int
    version: str | None = None


@dataclass(slots=True)
class OpenLoop:
    """The result of one open-loop run."""

    samples: list[Sample]
    opened_connections: int
    pool_size: int
    cpu: dict[str, float | None] = field(default_factory=dict)

    def errors(self) -> int:
        """Return how many requests failed (connection lost or a non-200 status)."""
        return sum(sample.status != 200 for sample in self.samples)

    def latency(self, start: float = float("-inf"), end: float = float("inf")
                ) -> dict[str, float]:
        """Return the percentiles of latency from the due time, for requests due in [start, end)."""
        return percentiles([s.done - s.due for s in self.samples if start <= s.due < end])

    def summary(self, rate: float) -> dict[str, Any]:
        """Return the run as report figures."""
        return {"rate_per_s": rate, "requests": len(self.samples), "errors": self.errors(),
                "latency_from_due": self.latency(),
                "latency_from_send": percentiles([s.done - s.sent for s in self.samples]),
                "send_lag": percentiles([s.sent - s.due for s in self.samples]),
                "pool_size": self.pool_size, "connections_opened_beyond_pool":
                    self.opened_connections, **self.cpu}


def _pace(loop: asyncio.AbstractEventLoop, start: float, interval: float, count: int,
          fire: Callable[[float], None], stop: threading.Event) -> None:
    """Sleep to each due time and hand the request to the loop (runs in the pacer thread)."""
    for index in range(count):
        due = start + index * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if stop.is_set():
            return
        loop.call_soon_threadsafe(fire, due)


@dataclass(frozen=True, slots=True)
class Schedule:
    """An open-loop timetable: ``rate`` requests per second for ``seconds``."""

    rate: float
    seconds: float
    pool_size: int = 32
    read_version: bool = False  # keep each answer's X-Model-Version
    start_delay: float = 0.05


async def open_loop(port: int, requests: Sequence[bytes], schedule: Schedule,
                    server_pid: int | None = None) -> OpenLoop:
    """Send requests on ``schedule``'s fixed timetable; return every request's timings."""
    loop = asyncio.get_running_loop()
    rate, seconds, read_version = schedule.rate, schedule.seconds, schedule.read_version
    pool: deque[Connection] = deque([await connect(port) for _ in range(schedule.pool_size)])
    result = OpenLoop([], 0, schedule.pool_size)
    count = max(1, round(rate * seconds))
    pending: set[asyncio.Task[None]] = set()
    finished = asyncio.Event()

    async def one(due: float, request: bytes) -> None:
        connection = pool.popleft() if pool else None
        if connection is None or connection.closed:
            result.opened_connections += 1
            connection = await connect(port)
        sent = time.perf_counter()
        answer = await exchange(connection, request)
        version = answer.header(b"x-model-version") if read_version else None
        result.samples.append(Sample(due, sent, time.perf_counter(), answer.status, version))
        if not connection.closed:
            pool.append(connection)
        if len(result.samples) == count:
            finished.set()

    issued = 0

    def fire(due: float) -> None:
        nonlocal issued
        task = loop.create_task(one(due, requests[issued % len(requests)]))
        issued += 1
        pending.add(task)
        task.add_done_callback(pending.discard)

    stop = threading.Event()
    meter = CpuMeter(server_pid)
    start = time.perf_counter() + schedule.start_delay
    pacer = threading.Thread(target=_pace, args=(loop, start, 1.0 / rate, count, fire, stop),
                             daemon=True, name="bench-pacer")
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the pacer thread gets the GIL back promptly
    pacer.start()
    try:
        await asyncio.wait_for(finished.wait(), seconds + ANSWER_TIMEOUT)
    finally:
        stop.set()
        sys.setswitchinterval(previous)
        await loop.run_in_executor(None, pacer.join)
        result.cpu = meter.shares()
        for connection in pool:
            connection.close()
    result.samples.sort(key=lambda sample: sample.due)
    return result


# -- the client's ceiling: a server that only returns canned bytes --------------------------------


class _CannedProtocol(asyncio.Protocol):
    """Answer every complete request (header block + Content-Length body) with CANNED."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lowered = bytes(self._buffer[:end]).lower()
            at = lowered.find(b"content-length:")
            length = 0
            if at >= 0:
                stop = lowered.find(b"\r\n", at)
                length = int(lowered[at + 15:stop if stop >= 0 else None])
            if len(self._buffer) < end + 4 + length:
                return
            del self._buffer[:end + 4 + length]
            assert self._transport is not None
            self._transport.write(CANNED)


async def _serve_canned(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    server = await loop.create_server(_CannedProtocol, sock=sock)
    await stopped.wait()
    server.close()


def trivial_server(sock: socket.socket) -> None:
    """Serve canned answers on ``sock`` until SIGTERM (uvloop, no HTTP framework)."""
    import uvloop

    uvloop.run(_serve_canned(sock))


if __name__ == "__main__":  # ``serving_load.py FD``: the canned server, without heavy imports
    trivial_server(socket.socket(fileno=int(sys.argv[1])))
