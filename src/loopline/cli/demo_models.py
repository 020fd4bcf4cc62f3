"""The registry part of ``loopline demo``: register a model, move an alias, verify it.

A small scikit-learn classifier learns from the demo's ``orders@1`` snapshot which orders
get refunded; it is registered with its signature, metrics and training data, becomes the
``champion``, and is reloaded and rescored in a fresh Python process to prove it rebuilds.
"""

from __future__ import annotations

from loopline.app import Workspace
from loopline.cli.output import console


def register_model(workspace: Workspace) -> None:
    """Train, register, alias and verify the demo model, printing each step."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = workspace.datasets.read("orders@1").to_pandas()
    features = frame[["amount", "items"]].astype("float64")
    refunded = (frame["status"] == "refunded").astype("int64")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(features, refunded)
    accuracy = round(float(model.score(features, refunded)), 4)
    version = workspace.models.register(
        model, "refunds", input_example=features.head(200), metrics={"accuracy": accuracy},
        datasets=["orders@1"], tags={"owner": "demo", "purpose": "flag likely refunds"})
    workspace.models.set_alias("refunds", "champion", version.version)
    console.print(f"   registered {version.uri} ({version.flavor}, sha256 "
                  f"{version.artifact_digest[:12]}…), accuracy {accuracy}; "
                  "models:/refunds@champion points at it")
    columns = ", ".join(c["name"] for c in (version.signature or {}).get("inputs", []))
    console.print(f"   signature inferred from the example: inputs {columns}")
    report = workspace.models.verify("models:/refunds@champion")
    console.print(f"   verify in a fresh Python process: {'passed' if report.passed else 'FAILED'}"
                  " (artifact hash, load, the recorded holdout rescored exactly)")
