"""selfheal.handlers."""
