"""The floor: the least a watch-based operator can do, as a separate process.

``python -m bench.scale.floor --kubeconfig K`` lists every Pod of the cluster, then
watches them (one watch, as the operator holds), decodes each event's JSON, and the
first time a Pod's restart count reaches the threshold it sends one JSON patch of the
operator's shape (a ``test`` on the uid, the revision-1 template, the annotations) to
the ``floor-twin`` Deployment of the Pod's namespace. No reads before the write, no
record, no guardrails: the API server's own watch and write latency, plus Python's
JSON decoding.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import ssl
import tempfile
from typing import Any

import aiohttp

from bench.scale import world


def _context(kubeconfig: dict[str, Any]) -> tuple[str, ssl.SSLContext, str]:
    cluster = kubeconfig["clusters"][0]["cluster"]
    user = kubeconfig["users"][0]["user"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    with tempfile.NamedTemporaryFile("w", suffix=".crt", delete=False) as f:
        f.write(ca)
    ctx = ssl.create_default_context(cafile=f.name)
    return str(cluster["server"]), ctx, str(user["token"])


async def run(kubeconfig: dict[str, Any]) -> None:
    server, ctx, token = _context(kubeconfig)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    fired: set[str] = set()
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx),
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
    ) as session:
        twins: dict[str, str] = {}
        async with session.get(
            server + "/apis/apps/v1/deployments",
            params={"fieldSelector": "metadata.name=floor-twin"},
        ) as r:
            for d in (await r.json())["items"]:
                twins[d["metadata"]["namespace"]] = d["metadata"]["uid"]

        async def react(pod: dict[str, Any]) -> None:
            meta = pod["metadata"]
            ns = meta["namespace"]
            name = meta["labels"]["app"]
            # The victim's revision-1 template, relabelled to the twin's selector.
            template = world.template(name, 1, with_hash=False)
            template["metadata"]["labels"] = {"app": "floor-twin"}
            patch = [
                {"op": "test", "path": "/metadata/uid", "value": twins[ns]},
                {"op": "replace", "path": "/spec/template", "value": template},
                {
                    "op": "replace",
                    "path": "/metadata/annotations",
                    "value": {"kubernetes.io/change-cause": f"floor: {meta['name']}"},
                },
            ]
            async with session.patch(
                server + world.apps(ns, "deployments", "floor-twin"),
                data=json.dumps(patch),
                headers={"Content-Type": "application/json-patch+json"},
            ) as r:
                text = await r.text()
                if r.status != 200:
                    print(f"patch {ns}/floor-twin: HTTP {r.status}: {text[:300]}", flush=True)

        def seen(pod: dict[str, Any]) -> None:
            uid = pod["metadata"]["uid"]
            if uid in fired or "app" not in (pod["metadata"].get("labels") or {}):
                return
            if world.crossing(pod.get("status") or {}):
                fired.add(uid)
                if pod["metadata"]["namespace"] in twins:
                    task = asyncio.get_running_loop().create_task(react(pod))
                    tasks.add(task)
                    task.add_done_callback(done)
                else:
                    print(f"no floor-twin in {pod['metadata']['namespace']}", flush=True)

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                print(f"patch failed: {task.exception()!r}", flush=True)

        rv = ""
        cont = ""
        while True:  # the initial listing, in pages
            params = {"limit": "500", **({"continue": cont} if cont else {})}
            async with session.get(server + "/api/v1/pods", params=params) as r:
                page = json.loads(await r.read())
            for pod in page["items"]:
                seen(pod)
            rv = page["metadata"]["resourceVersion"]
            cont = page["metadata"].get("continue", "")
            if not cont:
                break
        print(f"listed {len(twins)} twins", flush=True)
        while True:
            params = {
                "watch": "true",
                "resourceVersion": rv,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "300",
            }
            async with session.get(server + "/api/v1/pods", params=params) as r:
                async for line in r.content:
                    event = json.loads(line)
                    obj = event.get("object") or {}
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        seen(obj)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.scale.floor")
    p.add_argument("--kubeconfig", required=True)
    args = p.parse_args()
    loop = asyncio.new_event_loop()
    with open(args.kubeconfig) as f:
        kubeconfig = json.load(f)
    task = loop.create_task(run(kubeconfig))
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)


if __name__ == "__main__":
    main()
