"""The Kubernetes API as the operator uses it: five calls behind one small interface.

`KubeApi` is all the handlers see, so the tests can stand a recorded fake in for the API
server (`tests/k8s/fake_kube.py`). `RestKubeApi` is the real one: plain REST over aiohttp,
with credentials from the pod's service account or a kubeconfig (loaded by the `kubernetes`
package), and server-side apply so re-applying the same object is a no-op.
"""

from __future__ import annotations

import json
import ssl
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp

from . import FIELD_MANAGER, GROUP, PLURAL, VERSION

# kind -> (group, version, plural); every kind the operator reads or writes.
KINDS: dict[str, tuple[str, str, str]] = {
    "ConfigMap": ("", "v1", "configmaps"),
    "Secret": ("", "v1", "secrets"),
    "Service": ("", "v1", "services"),
    "Pod": ("", "v1", "pods"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets"),
    "DistSyncCluster": (GROUP, VERSION, PLURAL),
    "Event": ("", "v1", "events"),
}


def collection_path(kind: str, namespace: str) -> str:
    group, version, plural = KINDS[kind]
    root = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    return f"{root}/namespaces/{quote(namespace)}/{plural}"


def object_path(kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(kind, namespace)}/{quote(name)}"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class KubeApi(Protocol):
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list(self, kind: str, namespace: str,
                   selector: dict[str, str]) -> list[dict[str, Any]]: ...

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: create, or update the fields this manager owns."""
        ...

    async def create(self, obj: dict[str, Any]) -> bool:
        """Create; False (no error) if it exists already."""
        ...

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete; False (no error) if it was not there."""
        ...


class RestKubeApi:
    def __init__(self, host: str, token: Any = None, ssl_context: ssl.SSLContext | None = None):
        self.host = host.rstrip("/")
        self._token = token  # callable returning "Bearer ...", or None
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls) -> RestKubeApi:
        """In a pod: the service account. Elsewhere: $KUBECONFIG or ~/.kube/config."""
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)
        ctx: ssl.SSLContext | None = None
        if cfg.host.startswith("https"):
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            if cfg.cert_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            if not cfg.verify_ssl:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE

        def token() -> str | None:  # re-read each call: projected tokens rotate
            return cfg.get_api_key_with_prefix("BearerToken", alias="authorization")

        return cls(cfg.host, token, ctx)

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30),
                connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else False),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, body: Any = None,
                    content_type: str = "application/json",
                    params: dict[str, str] | None = None) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        auth = self._token() if self._token else None
        if auth:
            headers["Authorization"] = auth
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        url = self.host + path + (f"?{urlencode(params)}" if params else "")
        async with self._sess().request(method, url, data=data, headers=headers) as r:
            raw = await r.read()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = {"message": raw.decode(errors="replace")[:300]}
            return r.status, payload

    @staticmethod
    def _raise(status: int, payload: Any) -> None:
        p = payload if isinstance(payload, dict) else {}
        raise KubeError(status, str(p.get("reason", "")), str(p.get("message", payload)))

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        status, payload = await self._call("GET", object_path(kind, namespace, name))
        if status == 404:
            return None
        if status >= 400:
            self._raise(status, payload)
        return payload

    async def list(self, kind: str, namespace: str,
                   selector: dict[str, str]) -> list[dict[str, Any]]:
        sel = ",".join(f"{k}={v}" for k, v in selector.items())
        status, payload = await self._call(
            "GET", collection_path(kind, namespace), params={"labelSelector": sel})
        if status >= 400:
            self._raise(status, payload)
        return list(payload.get("items") or [])

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        status, payload = await self._call(
            "PATCH", object_path(obj["kind"], meta["namespace"], meta["name"]), obj,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": FIELD_MANAGER, "force": "true"})
        if status >= 400:
            self._raise(status, payload)
        return payload

    async def create(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]  # `name`, or `generateName` (never "exists")
        status, payload = await self._call(
            "POST", collection_path(obj["kind"], meta["namespace"]), obj,
            params={"fieldManager": FIELD_MANAGER})
        if status == 409:
            return False
        if status >= 400:
            self._raise(status, payload)
        return True

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        status, payload = await self._call("DELETE", object_path(kind, namespace, name))
        if status == 404:
            return False
        if status >= 400:
            self._raise(status, payload)
        return True


def event(owner: dict[str, Any], type_: str, reason: str, message: str,
          now: str) -> dict[str, Any]:
    """A core/v1 Event about the DistSyncCluster `owner`: what `kubectl describe` lists.
    Created with `KubeApi.create` (generateName: each one is new)."""
    meta = owner["metadata"]
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": owner.get("apiVersion") or f"{GROUP}/{VERSION}",
                           "kind": owner.get("kind") or "DistSyncCluster",
                           "name": meta["name"], "namespace": meta["namespace"],
                           "uid": meta.get("uid", "")},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
