"""selfheal.actions: the remediation actions, each idempotent, each refusing when unsafe.

Every action returns an ``ActionResult`` (never raises for an API error or a
refusal). Import the modules qualified: ``from selfheal.actions import rollback``.
"""

from selfheal.actions.result import ActionResult, Outcome, Reason

__all__ = ["ActionResult", "Outcome", "Reason"]
