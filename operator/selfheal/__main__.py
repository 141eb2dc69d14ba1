"""``python -m selfheal``: run the operator."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from selfheal import __version__, settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="selfheal",
        description="Run the selfheal operator: watch Pods and Deployments covered by "
        "HealingPolicy objects, remediate, verify, and escalate to Jira.",
        epilog="Every flag can also be set as SELFHEAL_<NAME> in the environment.",
    )
    p.add_argument("--version", action="version", version=f"selfheal {__version__}")
    p.add_argument(
        "--namespace",
        action="append",
        default=None,
        dest="namespaces",
        help="watch only this namespace (repeatable); default: cluster-wide",
    )
    p.add_argument("--prometheus-url", help="Prometheus base URL for metric triggers")
    p.add_argument("--jira-url", help="Jira base URL for escalation tickets")
    p.add_argument("--jira-secret", help="namespace/name of the Secret with Jira credentials")
    p.add_argument("--metrics-port", type=int, help="port of /metrics, /healthz, /readyz")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="campaign for a Lease and act only while holding it (default: on); "
        "--no-leader-election: always act (one replica, development)",
    )
    p.add_argument("--leader-election-name", help="name of the Lease (default: selfheal)")
    p.add_argument(
        "--leader-election-namespace",
        help="namespace of the Lease (default: the operator's, POD_NAMESPACE)",
    )
    p.add_argument("--lease-duration", type=float, help="seconds; default 15")
    p.add_argument("--renew-deadline", type=float, help="seconds; default 10")
    p.add_argument("--retry-period", type=float, help="seconds; default 2")
    p.add_argument(
        "--shard",
        type=int,
        help="this process's shard, 0 .. --total-shards - 1: it serves the namespaces "
        "whose hash falls in it (default 0)",
    )
    p.add_argument(
        "--total-shards",
        type=int,
        help="shards the namespaces are split across, each with its own Lease (default 1)",
    )
    p.add_argument(
        "--ticket-horizon",
        type=float,
        help="seconds after the first attempt when unfinished ticket work is given up; "
        "default 86400",
    )
    p.add_argument("--alertmanager-url", help="Alertmanager base URL: silences while healing")
    p.add_argument(
        "--alertmanager-token-file", help="file with a bearer token for Alertmanager's API"
    )
    p.add_argument(
        "--alert-webhook-port",
        type=int,
        help="port of the Alertmanager webhook receiver (POST /alerts); default 0: off",
    )
    p.add_argument(
        "--alert-webhook-token-file",
        help="file with the bearer token Alertmanager sends (required with the port)",
    )
    p.add_argument("--alert-webhook-cert-file", help="PEM certificate: serve the receiver on TLS")
    p.add_argument("--alert-webhook-key-file", help="PEM key of --alert-webhook-cert-file")
    p.add_argument("--kubeconfig", help="kubeconfig path; default: in-cluster or ~/.kube/config")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = settings.from_env()
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "kubeconfig"}
    if "namespaces" in overrides:
        overrides["namespaces"] = tuple(overrides["namespaces"])
    import dataclasses

    cfg = dataclasses.replace(base, **overrides)
    # Imported late: --help and --version must not need a cluster (and boot not kopf).
    from selfheal.handlers import boot

    return boot.run(cfg, kubeconfig=args.kubeconfig)


if __name__ == "__main__":
    sys.exit(main())
