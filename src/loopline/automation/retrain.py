"""``retrain``: start one pipeline run for the alert, wait for it, optionally start a canary.

Exactly one run per action: the run is created through ``Runner.create`` with the trigger key
``playbook:<action id>``, which the store lets start one run only. A worker killed after the
run was recorded and before the action noted it finds the run by that key when it takes the
action over, and never starts a second one. The run id is then noted on the action.

Who executes the run: the ``RunExecutor`` the automation was given (``inline_executor``
resumes it in this process), handed each pending run once per process, without holding the
action's lease (the run has its own); without one the run waits for a scheduler that knows
the pipeline (it executes pending triggered runs when it starts and on its sweep). The
action stays ``running``, unclaimed, until the run ends: ``done`` when it succeeded,
``failed`` when it failed or was cancelled, or had not ended within ``run_timeout``.

With ``canary: true`` the version the run registered (a model version whose ``run_id`` is the
run's: register with ``run=current_task().run_id``) starts a canary rollout on the alert's
deployment (``DeploymentService.start_canary``: the deploy gate decides), in the same
transaction as the action's ``done``. Its promotion is the rollout controller's business.

Params: ``pipeline`` (its name, required), ``parameters`` (a mapping, optional), ``canary``
(true/false). The run also gets, for each of these that the pipeline function declares:
``alert_id``, ``deployment``, ``rule``, ``window_start`` and ``window_end`` (ISO text: the
window of the evaluation that opened the alert), ``model`` and ``model_version`` (the
version the alert concerns). Explicit ``parameters`` win.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loopline.automation.governing import subject_version
from loopline.automation.held import Held
from loopline.automation.ports import Tools
from loopline.automation.rollback import reason_of
from loopline.core.deployments import Deployment
from loopline.core.errors import AlreadyExistsError, ConflictError, InvalidArgumentError
from loopline.core.models import version_uri
from loopline.core.monitoring import ActionState
from loopline.core.names import validate_name
from loopline.core.runs import PipelineRun, RunState, RunTrigger
from loopline.pipelines import PipelineDefinition
from loopline.store.playbook_records import versions_of_run

__all__ = ["FINAL_RUN_STATES", "trigger_key", "perform", "waiting"]

FINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
ALERT_PARAMETERS = ("alert_id", "deployment", "rule", "window_start", "window_end", "model",
                    "model_version")


def trigger_key(action_id: str) -> str:
    """Return the trigger key of an action's run: it starts one run only."""
    return f"playbook:{action_id}"


def _pipeline(held: Held, tools: Tools) -> PipelineDefinition:
    name = held.params.get("pipeline")
    if not isinstance(name, str):
        raise InvalidArgumentError("params.pipeline", "names the pipeline to run (required)")
    validate_name(name, "params.pipeline")
    found = tools.pipelines(name)
    if found is None:
        raise InvalidArgumentError("params.pipeline", f"no pipeline {name!r} is known to the "
                                                      "automation (give it to Automation)")
    return found


def _parameters(held: Held, tools: Tools, pipeline: PipelineDefinition) -> dict[str, Any]:
    given = held.params.get("parameters") or {}
    if not isinstance(given, Mapping):
        raise InvalidArgumentError("params.parameters", "must be a mapping of names to values")
    accepted = [name for name in ALERT_PARAMETERS if name in pipeline.signature.parameters]
    alert = held.alert.as_record()
    values = {name: alert[name] for name in accepted if name in alert}
    if "model" in accepted or "model_version" in accepted:
        model, version = subject_version(tools.ports, held.action, held.alert)
        values.update(model=model, model_version=version_uri(model, version))
    chosen = {name: values[name] for name in accepted if values.get(name) is not None}
    return {**chosen, **given}


def _start(held: Held, tools: Tools, pipeline: PipelineDefinition) -> PipelineRun:
    """Record the action's run, or return the one its key started already."""
    runner, key = tools.ports.runner, trigger_key(held.action.id)
    trigger = RunTrigger(key, f"{pipeline.name}/playbook:{held.action.playbook}", "playbook",
                         None, {"action_id": held.action.id, "alert_id": held.alert.alert_id,
                                "playbook": held.action.playbook,
                                "deployment": held.alert.deployment})
    try:
        return runner.create(pipeline, _parameters(held, tools, pipeline), trigger)
    except (AlreadyExistsError, ConflictError):  # ConflictError: the unique key won a race
        found = runner.runs.by_trigger(key)
        if found is None:
            raise
        return found


def waiting(held_run: PipelineRun, tools: Tools, timed_out: bool) -> bool:
    """Tell whether an action whose run is ``held_run`` has nothing to do now."""
    if held_run.state in FINAL_RUN_STATES or timed_out:
        return False
    return not (held_run.state is RunState.PENDING and tools.execute is not None
                and held_run.id not in tools.executed)


def perform(held: Held, tools: Tools) -> None:
    """Start (or find) the run, hand it to the executor, and settle the action by its end.

    Raises:
        InvalidArgumentError: naming ``params.*`` or a parameter the pipeline refuses.
        UserCodeError: when the pipeline function raises while planning.
        NotFoundError, ConflictError, InvalidTransitionError, PolicyDeniedError: from
            starting the canary (the action fails with the message).
    """
    pipeline = _pipeline(held, tools)
    run_id = held.action.result.get("run_id")
    if isinstance(run_id, str):
        run = tools.ports.runner.runs.run(run_id)
    else:
        run = _start(held, tools, pipeline)
        held.progress({"run_id": run.id, "pipeline": pipeline.name,
                       "parameters": dict(run.parameters)})
    if run.state is RunState.PENDING and tools.execute is not None \
            and run.id not in tools.executed:
        held.release({})  # the run has a lease of its own; this action needs none meanwhile
        tools.executed.add(run.id)
        tools.execute(pipeline, run)
        return  # the automation advances the action again, now its run has moved
    settle(held, tools, run)


def settle(held: Held, tools: Tools, run: PipelineRun) -> None:
    """Finish the action by the run's end, or let it wait (unclaimed) for the run."""
    if run.state not in FINAL_RUN_STATES:
        age = tools.ports.store.clock.now() - run.created_at
        if age > tools.options.run_timeout:
            held.move(ActionState.FAILED, {"run_state": str(run.state), "reason": (
                f"run {run.id} did not finish within {tools.options.run_timeout}")})
        else:
            held.release({"run_state": str(run.state)})
        return
    if run.state is not RunState.SUCCEEDED:
        held.move(ActionState.FAILED, {"run_state": str(run.state), "reason": run.error})
        return
    versions = versions_of_run(tools.ports.store.engine, run.id)
    registered = [version_uri(model, number) for model, number in versions]
    outcome = {"run_state": str(run.state), "registered": registered}
    if held.params.get("canary") is not True:
        held.move(ActionState.DONE, outcome)
        return
    if not versions:
        held.move(ActionState.FAILED, {**outcome, "reason": (
            f"run {run.id} registered no model version to start a canary of (register "
            "with run=current_task().run_id)")})
        return
    model, number = versions[-1]
    uri = version_uri(model, number)

    def started(after: Deployment) -> dict[str, Any]:
        return {**outcome, "canary": uri, "revision": after.revision}

    tools.ports.deployments.start_canary(
        held.alert.deployment, (model, number),
        reason=reason_of(held, f"canary of {uri} started"), within=held.done_within(started))
