"""The closed loop's settings and files for ``loopline demo``: its size, policy and monitoring.

``LoopSettings`` sizes the loop (``DEMO`` for ``make demo``, ``SMALL`` for the test suite and
``--quick``). The demo writes two files into its folder, as a team would keep them in git, and
applies them as ``loopline policy apply`` and ``loopline monitor apply`` do:

- ``policies/churn.yaml``: what a churn model needs before it is registered, deployed,
  stepped up in a canary or acted on by a playbook (a card, checked training data, accuracy
  overall and on the basic plan);
- ``monitor.yaml``: the rules (input drift, accuracy drop from the training value overall and
  on the basic-plan slice) and the playbooks they run (a notice; retrain with a canary).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from loopline.app import Workspace
from loopline.cli.monitor_cmds import read_config_file
from loopline.core.deployments import AnalysisPolicy, CanaryPlan
from loopline.governance.policy_files import read_policy_dir

DEPLOYMENT = "churn"
POLICY = textwrap.dedent("""\
    kind: gate_policy
    name: churn-serving
    description: what a churn model needs before it is registered, serves or is acted on
    applies_to: {models: ["churn"], gates: [register, deploy, rollout_step, playbook_action]}
    rules:
      - {id: card, kind: required_metadata, fields: [owner, purpose]}
      - {id: trained-on-checked-data, kind: lineage_complete, validated_datasets: true,
         code_version: false}
      - {id: accuracy, kind: metric, check: "accuracy >= 0.7"}
      - {id: basic-plan, kind: metric, check: "accuracy >= 0.6 on slice plan=basic"}
    """)


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """How big the loop is and how fast its simulated time moves.

    Every ``round`` of simulated time the load generator sends ``requests`` requests of
    ``rows`` customers each, spread over the round, then posts the labels of
    ``label_share`` of them. The shift starts after ``before``; the loop stops once the
    accuracy alert is resolved, or fails after ``limit``.
    """

    requests: int = 30
    rows: int = 8
    label_share: float = 0.9
    round: timedelta = timedelta(seconds=20)
    before: timedelta = timedelta(minutes=3)
    limit: timedelta = timedelta(minutes=25)
    train_rows: int = 3_000
    window: str = "2m"
    min_samples: int = 300
    canary_steps: tuple[float, ...] = (25.0, 50.0, 100.0)
    canary_min_requests: int = 12
    seed: int = 2026

    def canary(self) -> CanaryPlan:
        """Return the canary plan of the deployment (analysis every simulated minute).

        The latency guard is loose on purpose: both versions answer in about a millisecond
        on loopback, where a p99 over a few dozen requests is mostly scheduling noise.
        """
        return CanaryPlan(self.canary_steps, AnalysisPolicy(
            interval=timedelta(minutes=1), max_error_rate_increase=0.01, max_p99_ratio=10.0,
            min_samples=self.canary_min_requests, passes_to_promote=1,
            failures_to_rollback=2))


DEMO = LoopSettings()
SMALL = LoopSettings(requests=10, rows=6, train_rows=1_200, min_samples=120,
                     canary_steps=(50.0, 100.0), canary_min_requests=8)


def monitor_yaml(settings: LoopSettings, root: Path) -> str:
    """Return the monitoring config the demo applies (see the module docstring)."""
    return textwrap.dedent(f"""\
        # What to watch on the churn deployment, and what to do about it.
        drift:
          share: 0.5                  # the inputs drift when more than half their columns do
        slices:
          basic-plan: {{plan: basic}}
        playbooks:
          heads-up:
            steps:
              - {{action: notify, message: "churn inputs drifted", cooldown: false}}
          recover:
            cooldown: 1h              # one retrain an hour per deployment, however many alerts
            steps:
              - action: retrain
                pipeline: retrain_churn # trains on the alert's window with its labels
                canary: true            # then a canary of what it registered
                parameters: {{root: {json.dumps(str(root))}}}
        rules:
          - name: input-drift
            signal: dataset_drift
            deployment: {DEPLOYMENT}
            window: {settings.window}
            threshold: 0.5
            min_samples: {settings.min_samples}
            severity: warning
            playbook: heads-up
          - name: accuracy-drop
            signal: quality
            metric: accuracy
            baseline: training        # the drop from the serving version's training value
            deployment: {DEPLOYMENT}
            window: {settings.window}
            threshold: 0.1
            min_samples: {settings.min_samples}
            for: 2
            severity: critical
            playbook: recover
          - name: basic-plan-accuracy
            signal: quality
            metric: accuracy
            baseline: training
            slice: basic-plan
            deployment: {DEPLOYMENT}
            window: {settings.window}
            threshold: 0.15
            min_samples: {settings.min_samples // 3}
            for: 2
            severity: warning
        """)


def apply_policy(workspace: Workspace, root: Path) -> Path:
    """Write ``policies/churn.yaml`` beside the demo's other policies and apply the folder."""
    folder = root / "policies"
    folder.mkdir(exist_ok=True)
    path = folder / "churn.yaml"
    path.write_text(POLICY, encoding="utf-8")
    workspace.policies.apply(workspace.actor, read_policy_dir(folder))
    return path


def apply_monitoring(workspace: Workspace, root: Path, settings: LoopSettings) -> Path:
    """Write ``monitor.yaml`` and apply it as the monitoring config in force."""
    path = root / "monitor.yaml"
    path.write_text(monitor_yaml(settings, root), encoding="utf-8")
    document = read_config_file(path)
    workspace.monitor_configs.apply(workspace.actor, document.data, source=path.name,
                                    where=document.where)
    return path
