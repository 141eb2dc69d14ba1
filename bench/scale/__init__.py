"""Cluster-scale benchmarks of the operator against the floor set by the API server.

``python -m bench.run`` (``make bench``) drives them; see ``bench/README.md``.
"""
