"""``loopline rollouts run``: judge canaries between steps, promoting or rolling back by itself.

Without ``--once`` it ticks the rollout controller every ``--interval`` until interrupted
(Ctrl-C or SIGTERM), with a status line and one line per verdict. ``--once`` judges what is
due now, prints the verdicts and exits. Several of these may run against one store: windows
come from stored state, and a repeated verdict is ignored. Through ``--server`` each tick
asks the server to judge once (``client.deployments.run_rollouts``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol

import typer
from rich.text import Text

from loopline.cli.context import open_session
from loopline.cli.output import console, table
from loopline.client import Client
from loopline.core.deployments import DeploymentState, RolloutVerdict
from loopline.core.errors import InvalidArgumentError, LooplineError
from loopline.governance.durations import parse_duration
from loopline.loop.rollout import DEFAULT_SETTLE, RolloutController, WindowRules

app = typer.Typer(help="The rollout controller: canary analysis, promotion and rollback.",
                  no_args_is_help=True)

_STYLE = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
MAX_WAIT = timedelta(hours=1)


def _check(check: Mapping[str, Any]) -> str:
    observed = check.get("observed")
    shown = "-" if observed is None else f"{observed:.4g}" if isinstance(observed, float) \
        else str(observed)
    passed = check.get("passed")
    mark = "?" if passed is None else "ok" if passed else "FAIL"
    return f"{check['name']} {shown}/{check['threshold']:g} {mark}"


def _numbers(verdict: RolloutVerdict) -> str:
    checks = verdict.numbers.get("checks", [])
    return "; ".join(_check(c) for c in checks if c.get("status") is None)


def _line(verdict: RolloutVerdict) -> Text:
    line = Text(f"{_when(verdict.window_end)} {verdict.deployment} step {verdict.step}: ")
    line.append(verdict.verdict, style=_STYLE.get(verdict.verdict, "white"))
    line.append(f" ({_numbers(verdict)})")
    return line


def _when(moment: datetime) -> str:
    return moment.isoformat(sep=" ", timespec="seconds")


def _show(verdicts: list[RolloutVerdict]) -> None:
    if not verdicts:
        console.print("no canary analysis was due")
        return
    table(f"{len(verdicts)} verdicts", ["deployment", "step", "window", "verdict", "numbers"], [
        (v.deployment, v.step, f"{_when(v.window_start)} to {_when(v.window_end)}",
         Text(v.verdict, style=_STYLE.get(v.verdict, "white")), _numbers(v))
        for v in verdicts])


class _Ticks(Protocol):
    rolling_out: int

    def tick(self) -> list[RolloutVerdict]: ...


class _ServerTicks:
    """The server's rollout controller, one tick per call (``--server``)."""

    def __init__(self, client: Client, settle: timedelta) -> None:
        self._client, self._settle = client, settle
        self.rolling_out = 0

    def tick(self) -> list[RolloutVerdict]:
        verdicts = self._client.deployments.run_rollouts(self._settle)
        self.rolling_out = sum(d.state is DeploymentState.ROLLING_OUT
                               for d in self._client.deployments.list())
        return verdicts


def _serve(controller: _Ticks, interval: timedelta) -> None:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    judged = 0
    with console.status("rollouts: starting") as status:
        while not stop.is_set():
            try:
                verdicts = controller.tick()
            except LooplineError as exc:  # the store is away: keep trying
                status.update(f"rollouts: {exc.message}; retrying")
            else:
                for verdict in verdicts:
                    console.print(_line(verdict))
                judged += len(verdicts)
                status.update(f"rollouts: {controller.rolling_out} rolling out, {judged} "
                              f"verdicts; next check in {interval.total_seconds():g}s "
                              "(Ctrl-C stops)")
            stop.wait(interval.total_seconds())


@app.command("run")
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option(
        "--once", help="Judge what is due now, print the verdicts and exit.")] = False,
    interval: Annotated[str, typer.Option(
        help="Time between checks, e.g. 5s or 1m.")] = "5s",
    settle: Annotated[str | None, typer.Option(
        help="Wait this long after a window ends before judging it (stats flush lag), "
             "e.g. 30s; default 15s: one stats bucket plus one flush period.")] = None,
) -> None:
    """Judge each rolling-out canary when its interval elapses; promote or roll back."""
    every = parse_duration(interval, "--interval")
    wait = DEFAULT_SETTLE if settle is None else parse_duration(settle, "--settle")
    for flag, value in (("--interval", every), ("--settle", wait)):
        if value > MAX_WAIT:
            raise InvalidArgumentError(flag, f"{value} is longer than 1h")
    with open_session(ctx) as workspace:
        controller: _Ticks = _ServerTicks(workspace, wait) if isinstance(workspace, Client) \
            else RolloutController(workspace.store, workspace.deployments,
                                   workspace.store.clock, WindowRules(settle=wait))
        if once:
            _show(controller.tick())
            return
        try:
            _serve(controller, every)
        except KeyboardInterrupt:
            console.print("stopped")
