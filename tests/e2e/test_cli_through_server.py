"""The CLI through ``--server``: the same commands print the same JSON locally and through a
loopline server, changes are made once and audited as the token's user, local-only commands
and a server without a token are refused naming the flag (5), and a wrong token exits 9.

A server (``create_api`` on a ``ThreadedServer``) runs in this process over a workspace
seeded with a model (an alias, a dataset in its lineage), a dataset and a deployment. Each
command runs in this process twice: in the workspace as ``ada`` and from an empty folder
through the server with ada's admin token. One test runs real processes.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cli_runner import InProcessCli, Ran, run_console
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from loopline.api import ApiOptions, create_api
from loopline.app import Workspace
from loopline.core.deployments import Route
from loopline.serving.server import ThreadedServer
from loopline.store import AuditFilter

POLICY = textwrap.dedent("""\
    kind: gate_policy
    name: owned
    applies_to:
      gates: [alias]
      targets: [production]
    rules:
      - id: card
        kind: required_metadata
        fields: [owner]
    """)
MONITOR = textwrap.dedent("""\
    rules:
      - name: errors
        signal: error_rate
        deployment: iris-prod
        window: 5m
        threshold: 0.05
    """)


@dataclass(frozen=True)
class Served:
    """A seeded workspace, a server over it, ada's admin token and a folder without one."""

    ws: Workspace
    url: str
    secret: str
    elsewhere: Path

    def local(self, run: Any, *args: str) -> Ran:
        """Run ``loopline ARGS`` in the workspace as ada."""
        return run(self.ws.root, *args, user="ada")

    def remote(self, run: Any, *args: str) -> Ran:
        """Run ``loopline --server URL --token SECRET ARGS`` from a folder with no workspace."""
        return run(self.elsewhere, "--server", self.url, "--token", self.secret, *args,
                   user=None)

    def audited(self, action: str) -> list[str]:
        """Return the actors of the audit entries of ``action``, newest first."""
        return [e.actor for e in self.ws.audit.entries(AuditFilter(action=action,
                                                                   limit=1000))]


def _seed(ws: Workspace) -> None:
    features, target = load_iris(return_X_y=True, as_frame=True)
    ws.datasets.snapshot(pd.concat([features, target], axis=1), "iris-data")
    model = LogisticRegression(max_iter=500).fit(features, target)
    ws.models.register(model, "iris", input_example=features.head(5),
                       datasets=["iris-data@1"], metrics={"accuracy": 0.97})
    ws.models.set_alias("iris", "champion", 1)
    ws.deployments.create("iris-prod", [Route("iris", 1, 100.0)], "replace")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    workspace = Workspace.init(tmp_path / "ws")
    _seed(workspace)
    _, secret = workspace.tokens.create("ada", "admin")
    workspace.access.grant(workspace.actor, "ada", "admin")
    workspace.access.grant("ada", "dev", "developer")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = ThreadedServer(create_api(workspace, ApiOptions(auth_failures_per_minute=0)))
    try:
        yield Served(workspace, server.url, secret, elsewhere)
    finally:
        server.stop()
        workspace.close()


def _json(done: Ran) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


READS = [
    ("models", "list"),
    ("models", "show", "models:/iris@champion"),
    ("models", "versions", "iris"),
    ("models", "card", "iris/1"),
    ("data", "list"),
    ("data", "show", "iris-data@1"),
    ("deploy", "list"),
    ("deploy", "show", "iris-prod"),
    ("deploy", "history", "iris-prod"),
    ("approvals", "list"),
    ("monitor", "show"),
    ("monitor", "evaluations"),
    ("monitor", "alerts"),
    ("playbooks", "actions"),
    ("runs", "list"),
    ("audit", "log", "--limit", "200"),
    ("audit", "verify"),
    ("lineage", "show", "model_version:iris@1"),
    ("users", "list"),
    ("users", "whoami"),
    ("policy", "show"),
    ("retention", "holds", "list", "--all"),
]


def test_reads_print_the_same_json_locally_and_through_the_server(
        served: Served, run_cli: InProcessCli) -> None:
    for args in READS:
        here = _json(served.local(run_cli, *args, "--json"))
        there = _json(served.remote(run_cli, *args, "--json"))
        assert here == there, args
    lineage = _json(served.local(run_cli, "lineage", "show", "model_version:iris@1", "--json"))
    assert "dataset_snapshot:iris-data@1" in {node["id"] for node in lineage["nodes"]}
    assert _json(served.remote(run_cli, "users", "whoami", "--json"))["actor"] == "ada"
    table = served.remote(run_cli, "models", "list")
    assert table.returncode == 0 and table.stdout == served.local(run_cli, "models",
                                                                  "list").stdout


def test_changes_through_the_server_happen_once_as_the_tokens_user(
        served: Served, run_cli: InProcessCli) -> None:
    alias = _json(served.remote(run_cli, "models", "alias", "iris", "challenger", "1", "--json"))
    assert alias == {"uri": "models:/iris@challenger", "from": None, "to": 1}
    assert served.audited("model.alias_moved") == ["ada", served.ws.actor]

    made = _json(served.remote(run_cli, "approvals", "request", "models:/iris@champion",
                               "--gate", "status", "--target", "production",
                               "--reason", "ready", "--json"))
    listed = _json(served.local(run_cli, "approvals", "list", "--json"))
    assert [(r["id"], r["requester"], r["version"]) for r in listed] == [(made["id"], "ada", 1)]
    assert served.audited("governance.approval_requested") == ["ada"]

    granted = served.remote(run_cli, "users", "grant", "vic", "viewer")
    assert granted.returncode == 0 and "vic holds viewer" in granted.stdout
    assert served.audited("governance.role_granted")[0] == "ada"

    folder = served.elsewhere / "policies"
    folder.mkdir()
    (folder / "owned.yaml").write_text(POLICY)
    applied = served.remote(run_cli, "policy", "apply")  # policies/ of the current folder
    assert applied.returncode == 0 and "applied policy set" in applied.stdout, applied.stderr
    assert _json(served.local(run_cli, "policy", "show", "--json"))["applied_by"] == "ada"

    (served.elsewhere / "monitor.yaml").write_text(MONITOR)
    assert served.remote(run_cli, "monitor", "apply", "monitor.yaml").returncode == 0
    again = served.remote(run_cli, "monitor", "apply", "monitor.yaml")
    assert "nothing written" in again.stdout
    shown = _json(served.local(run_cli, "monitor", "show", "--json"))
    assert (shown["applied_by"], shown["source"]) == ("ada", "monitor.yaml")
    assert served.audited("monitoring.config_applied") == ["ada"]
    evaluated = _json(served.remote(run_cli, "monitor", "run", "--json"))
    assert [e["rule"] for e in evaluated] == ["errors"]
    assert _json(served.local(run_cli, "monitor", "evaluations", "--json")) == evaluated

    held = served.remote(run_cli, "retention", "holds", "add", "*", "iris*", "--reason", "legal")
    assert held.returncode == 0, held.stderr
    assert served.audited("governance.legal_hold_added") == ["ada"]

    exported = served.elsewhere / "iris.parquet"
    assert served.remote(run_cli, "data", "export", "iris-data@1", str(exported)).returncode == 0
    assert pd.read_parquet(exported).equals(served.ws.datasets.read("iris-data@1").to_pandas())

    rows = served.elsewhere / "more.csv"
    rows.write_text("a,b\n1,2\n3,4\n")
    snap = _json(served.remote(run_cli, "data", "snapshot", str(rows), "--name", "extra",
                               "--json"))
    assert (snap["ref"], snap["rows"], snap["created"]) == ("extra@1", 2, True)
    assert _json(served.local(run_cli, "data", "show", "extra", "--json"))["created_by"] == "ada"

    for args in [("approvals", "list"), ("users", "list"), ("policy", "show"),
                 ("monitor", "show"), ("data", "list"), ("retention", "holds", "list"),
                 ("models", "show", "iris@challenger"), ("audit", "log", "--actor", "ada")]:
        assert _json(served.local(run_cli, *args, "--json")) == \
            _json(served.remote(run_cli, *args, "--json")), args


def test_identities_and_roles_change_through_the_server_as_the_tokens_user(
        served: Served, run_cli: InProcessCli) -> None:
    for args in [("users", "add", "ci-bot", "--service", "--description", "nightly"),
                 ("users", "grant", "ci-bot", "developer", "--models", "iris*"),
                 ("users", "disable", "ci-bot"), ("users", "enable", "ci-bot"),
                 ("users", "revoke", "ci-bot", "developer", "--models", "iris*")]:
        done = served.remote(run_cli, *args)
        assert done.returncode == 0, (args, done.stderr)
    for action in ("identity_added", "role_granted", "identity_disabled", "identity_enabled",
                   "role_revoked"):
        assert served.audited(f"governance.{action}")[0] == "ada", action
    assert served.ws.access.bindings("ci-bot") == []
    [bot] = [i for i in served.ws.access.identities() if i.name == "ci-bot"]
    assert (str(bot.kind), bot.created_by, bot.disabled) == ("service", "ada", False)


def test_a_policy_folder_without_policies_is_refused_through_the_server_naming_it(
        served: Served, run_cli: InProcessCli) -> None:
    folder = served.elsewhere / "drafts"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a policy")
    refused = served.remote(run_cli, "policy", "apply", "drafts")
    assert refused.returncode == 5, refused.stderr
    assert "invalid drafts: holds no gate policy" in " ".join(refused.stderr.split())
    assert "--allow-empty" in refused.stderr
    assert served.ws.policies.current() is None
    cleared = served.remote(run_cli, "policy", "apply", "drafts", "--allow-empty")
    assert cleared.returncode == 0, cleared.stderr
    assert served.audited("governance.policy_applied") == ["ada"]


def test_local_only_commands_and_a_server_without_token_are_refused_naming_the_flag(
        served: Served, run_cli: InProcessCli) -> None:
    for args in [("events", "list"), ("status",), ("artifacts", "list"),
                 ("policy", "check", "iris/1", "--gate", "alias"),
                 ("models", "export", "iris/1", "out.bundle")]:
        refused = served.remote(run_cli, *args)
        assert refused.returncode == 5, (args, refused.stderr)
        assert "--server" in refused.stderr and "local workspace only" in refused.stderr
    missing = run_cli(served.elsewhere, "--server", served.url, "models", "list", user=None)
    assert missing.returncode == 5 and "--token" in missing.stderr
    wrong = run_cli(served.elsewhere, "--server", served.url, "--token", "llt_wrong",
                    "models", "list", user=None)
    assert wrong.returncode == 9, wrong.stderr


@pytest.mark.e2e
def test_a_real_process_acts_through_the_server_and_a_wrong_token_exits_9(
        served: Served, run_cli: InProcessCli) -> None:
    there = run_console(served.elsewhere, "deploy", "show", "iris-prod", "--json", user=None,
                        env={"LOOPLINE_SERVER": served.url, "LOOPLINE_TOKEN": served.secret})
    here = served.local(run_cli, "deploy", "show", "iris-prod", "--json")
    assert _json(there) == _json(here)
    wrong = run_console(served.elsewhere, "--server", served.url, "models", "list", user=None,
                        env={"LOOPLINE_TOKEN": "llt_not-a-token"})
    assert wrong.returncode == 9
    assert "missing, unknown, expired or revoked API token" in wrong.stderr
