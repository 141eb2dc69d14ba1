"""selfheal.actions."""
