"""``SignalDrain``: the first stop signal drops readiness and stops only after the drain
delay; a second signal stops at once; with no delay the first stops at once."""

from __future__ import annotations

import signal
import threading

from loopline.serving.server import SignalDrain


class Recorder:
    def __init__(self) -> None:
        self.drained = 0
        self.stopped: list[int] = []
        self.stop_seen = threading.Event()

    def begin_drain(self) -> None:
        self.drained += 1

    def stop(self, sig: int) -> None:
        self.stopped.append(sig)
        self.stop_seen.set()


def test_the_first_signal_drains_and_stops_after_the_delay() -> None:
    seen = Recorder()
    drain = SignalDrain(seen.begin_drain, seen.stop, 0.2)
    drain(signal.SIGTERM, None)
    assert (seen.drained, seen.stopped, drain.draining) == (1, [], True)
    assert seen.stop_seen.wait(5)
    assert seen.stopped == [signal.SIGTERM]


def test_a_second_signal_stops_at_once_without_draining_again() -> None:
    seen = Recorder()
    drain = SignalDrain(seen.begin_drain, seen.stop, 30.0)
    drain(signal.SIGTERM, None)
    drain(signal.SIGINT, None)
    assert (seen.drained, seen.stopped) == (1, [signal.SIGINT])


def test_without_a_delay_the_first_signal_stops_at_once() -> None:
    seen = Recorder()
    SignalDrain(seen.begin_drain, seen.stop, 0.0)(signal.SIGINT, None)
    assert (seen.drained, seen.stopped) == (1, [signal.SIGINT])
