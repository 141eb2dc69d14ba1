"""selfheal: a Kubernetes operator that heals workloads by itself.

Detect (crash loops, Prometheus thresholds, learned baselines), act (roll back,
scale, restart), verify, and escalate to Jira with redacted evidence. Every
incident is recorded in a ``Remediation`` object.
"""

__version__ = "0.1.0"
GROUP = "selfheal.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = ["API_VERSION", "GROUP", "VERSION", "__version__"]
