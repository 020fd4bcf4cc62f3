"""``Client``: a loopline server seen through the same surface as a local ``Workspace``.

``loopline.connect("https://host:8443", token=...)`` returns one. Its services carry the
workspace's names (``models``, ``datasets``, ``deployments`` ...) and their methods take the
same arguments and return the same records, so code written against a workspace runs against
a server. What only makes sense next to the files (``serving_config``, ``runner``, the
store itself) is not here.
"""

from __future__ import annotations

from types import TracebackType

import httpx

from loopline.client.audit import RemoteAudit
from loopline.client.datasets import RemoteDatasets, RemoteValidation
from loopline.client.deployments import RemoteDeployments
from loopline.client.governance import (
    RemoteAccess,
    RemoteApprovals,
    RemoteGovernanceReport,
    RemoteLegalHolds,
    RemotePolicies,
    RemoteRetention,
)
from loopline.client.lineage import RemoteLineage
from loopline.client.models import RemoteModels
from loopline.client.monitoring import (
    RemoteEvaluator,
    RemoteMonitorConfigs,
    RemotePlaybookActions,
)
from loopline.client.runs import RemotePipelines
from loopline.client.tokens import RemoteTokens
from loopline.client.transport import Transport
from loopline.core.validation import ValidationReport
from loopline.data.validation import Suite

__all__ = ["Client"]


class Client:
    """One connection to a loopline server, acting as the token's user."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0,
                 verify: bool | str = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        """Prepare calls to the server at ``url`` with ``token`` (nothing is sent yet).

        ``verify`` is False or a CA bundle's path for servers with their own certificate.

        Raises:
            InvalidArgumentError: naming ``url`` or ``token`` when malformed.
        """
        self._http = Transport(url, token, timeout=timeout, transport=transport,
                               verify=verify)
        self.url = self._http.url
        self.tokens = RemoteTokens(self._http)
        self.datasets = RemoteDatasets(self._http)
        self.validation = RemoteValidation(self._http)
        self.lineage = RemoteLineage(self._http)
        self.audit = RemoteAudit(self._http)
        self.models = RemoteModels(self._http)
        self.pipelines = RemotePipelines(self._http)
        self.deployments = RemoteDeployments(self._http)
        self.monitor_configs = RemoteMonitorConfigs(self._http)
        self.evaluator = RemoteEvaluator(self._http)
        self.playbook_actions = RemotePlaybookActions(self._http)
        self.approvals = RemoteApprovals(self._http)
        self.policies = RemotePolicies(self._http)
        self.access = RemoteAccess(self._http)
        self.legal_holds = RemoteLegalHolds(self._http)
        self.retention = RemoteRetention(self._http)
        self.governance_report = RemoteGovernanceReport(self._http)

    def validate_dataset(self, ref: str, suite: Suite) -> ValidationReport:
        """Check a dataset version against ``suite`` on the server and store the result.

        As ``Workspace.validate_dataset``; the suite is sent as JSON.
        """
        return self.validation.validate_dataset(ref, suite)

    def whoami(self) -> dict[str, str]:
        """Return the user and role the token acts as."""
        found = self._http.get("/whoami")
        return {"user": str(found["user"]), "role": str(found["role"]),
                "token_id": str(found["token_id"])}

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
