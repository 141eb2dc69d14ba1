"""selfheal.clients."""
