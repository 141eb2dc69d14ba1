"""selfheal.policy: the HealingPolicy API as typed, validated values. No I/O.

- ``model``: the frozen dataclasses every layer above reads (the shared contract).
- ``parse``: ``parse(body) -> HealingPolicy`` or ``PolicyError(field, message)``;
  ``parse_duration(text) -> seconds``.
- ``selector``: ``selector_matches(target, labels)``, ``label_selector(target)``.
- ``conditions``: condition types and reasons, ``set_condition(...)``.

Import the modules (``from selfheal.policy import parse``), not names from here.
"""
