"""`distsync-operator delete-cluster NAME`: delete a DistSyncCluster and wait until it is gone.

The chart runs this as a `pre-delete` hook Job when it created a DistSyncCluster
(`cluster.enabled`): `helm uninstall` deletes the operator, its ServiceAccount and its RBAC
together with the custom resource, and then nothing could remove kopf's finalizer, so the
resource stayed Terminating for ever (issue 18, F4). Before Helm deletes anything, this asks
for the deletion and waits while the operator, still running with its permissions, lets it
go.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import GROUP, PLURAL, VERSION


def delete_cluster(name: str, namespace: str, timeout: float) -> int:
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()
    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status != 404:
            raise
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                print(f"DistSyncCluster {namespace}/{name} deleted", flush=True)
                return 0
            raise
        time.sleep(1)
    print(f"DistSyncCluster {namespace}/{name} still exists after {timeout:.0f}s: is the "
          "operator running?", file=sys.stderr, flush=True)
    return 1


def main(args: list[str]) -> int:
    p = argparse.ArgumentParser(prog="distsync-operator delete-cluster")
    p.add_argument("name")
    p.add_argument("--namespace", required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args(args)
    return delete_cluster(a.name, a.namespace, a.timeout)
