"""selfheal.remediation: the decision core of the loop, and the driver that runs it.

Pure (no I/O, no clock; tested with a fake clock):

- ``state``: ``RemediationState``, the incident as a Remediation's status stores it.
- ``machine``: ``step(state, event=, policy=, context=, now=) -> (state, effects)``
  and ``wakeup(...)``; events, effects and Event reasons.
- ``guardrails``: ``check(...) -> Decision`` from the Remediation records
  (``RecordSummary``), so limits survive restarts.
- ``naming``: record names (creating one is the lock), fingerprints, labels.

The driver feeds events to ``machine.step``, persists the returned state, then
executes the effects. Import modules qualified: ``from selfheal.remediation import
machine`` then ``machine.step(...)``.
"""
