"""selfheal.remediation."""
