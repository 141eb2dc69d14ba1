"""selfheal.evidence."""
