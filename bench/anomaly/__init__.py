"""NAB benchmark of the learned-baseline anomaly detector (``python -m bench.anomaly.run``)."""
