"""selfheal.policy."""
