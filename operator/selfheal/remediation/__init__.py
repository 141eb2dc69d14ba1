"""selfheal.remediation: the pure decision core of the loop (phases, machine, guardrails).

The driver (``selfheal.handlers``) feeds events to ``machine.step``, persists the
returned ``RemediationState`` into the Remediation object's status, then executes
the returned effects. Import modules qualified: ``from selfheal.remediation import
machine`` then ``machine.step(...)``.
"""
