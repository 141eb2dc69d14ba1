"""selfheal.detect."""
