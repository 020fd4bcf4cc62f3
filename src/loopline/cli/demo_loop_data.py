"""The closed loop's data for ``loopline demo``: customers who churn, before and after a shift.

Generated with fixed seeds (no downloads). Each customer has a tenure in months, a monthly
charge, a count of support calls and a plan; whether they churn is drawn from a logistic
model of those. The shift is the kind that hurts a deployed model twice:

- covariate shift: a price rise (charges +23 on average), more support calls, more customers
  on the basic plan — the inputs' distributions move (drift rules see it without labels);
- concept change: a competitor now courts loyal customers, so long tenure makes churn more
  likely instead of less, and the plans' effects turn round — the old model's answers go
  wrong (quality rules see it once labels arrive).

A model trained before the shift scores about 0.8 accuracy before and about 0.45 after; one
trained on the labelled traffic after the shift scores about 0.8 again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

FEATURES = ("tenure", "charges", "calls", "plan")
LABEL = "churned"
PLANS = ("basic", "plus", "pro")
PLAN_EFFECT = {"basic": 0.5, "plus": 0.0, "pro": -0.7}

SUITE = """
name: churn-training-data
expectations:
  - {type: row_count_between, min: 100}
  - {type: null_rate_at_most, column: tenure, max: 0}
  - {type: null_rate_at_most, column: charges, max: 0}
  - {type: values_between, column: tenure, min: 0, max: 120}
  - {type: values_between, column: charges, min: 0, max: 500}
  - {type: values_between, column: calls, min: 0, max: 50}
  - {type: values_in_set, column: plan, values: [basic, plus, pro]}
  - {type: values_in_set, column: churned, values: [0, 1]}
"""


def customers(rows: int, seed: int, shifted: bool = False) -> pd.DataFrame:
    """Return ``rows`` customers with their ``churned`` label, before or after the shift."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 73, rows)
    charges = rng.normal(88.0 if shifted else 65.0, 16.0, rows).clip(15.0, 160.0).round(2)
    calls = rng.poisson(2.5 if shifted else 1.5, rows)
    plan = rng.choice(PLANS, rows, p=(0.65, 0.25, 0.10) if shifted else (0.5, 0.3, 0.2))
    effect = np.array([PLAN_EFFECT[name] for name in plan])
    if shifted:
        logit = 0.8 * (calls - 2.5) + 0.03 * (charges - 88.0) + 0.07 * (tenure - 36) - effect
    else:
        logit = 0.8 * (calls - 1.5) + 0.05 * (charges - 65.0) - 0.07 * (tenure - 36) + effect
    churned = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")
    return pd.DataFrame({"tenure": tenure, "charges": charges, "calls": calls, "plan": plan,
                         LABEL: churned})


def new_model() -> Any:
    """Return an unfitted model: one-hot plans, scaled numbers, logistic regression."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encode = make_column_transformer((OneHotEncoder(), ["plan"]), remainder=StandardScaler())
    return make_pipeline(encode, LogisticRegression(max_iter=500))


def slice_metrics(model: Any, frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Return accuracy and F1 of ``model`` on ``frame``, overall and per plan (``plan=basic``)."""
    from sklearn.metrics import accuracy_score, f1_score

    predicted = model.predict(frame[list(FEATURES)])
    truth = frame[LABEL].to_numpy()
    parts = {"overall": np.ones(len(frame), dtype=bool)}
    parts.update({f"plan={name}": (frame["plan"] == name).to_numpy() for name in PLANS})
    metrics: dict[str, dict[str, float]] = {"accuracy": {}, "f1": {}}
    for key, mask in parts.items():
        if not mask.any():
            continue
        metrics["accuracy"][key] = round(float(accuracy_score(truth[mask], predicted[mask])), 4)
        metrics["f1"][key] = round(float(f1_score(truth[mask], predicted[mask],
                                                  zero_division=0.0)), 4)
    return metrics
