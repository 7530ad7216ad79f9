"""A recorded FAKE Kubernetes API server over HTTP, for running the real operator process
(`distsync-operator`, i.e. `kopf run`) without a cluster.

It serves, on 127.0.0.1, just what kopf and the operator use: discovery (/version, /api,
/apis, the resource lists), list and watch (with resourceVersion replay), get, create,
server-side apply and JSON merge patch (of objects and of /status), delete with finalizers,
and events. Objects live in a `FakeKubeApi` store, so the `FakeKubelet` of fake_kube.py
runs behind it unchanged. Every request is recorded as (verb, group, resource, namespace,
path), and an `authorize` callback can refuse requests with 403 as RBAC would. It is a fake:
no admission, no validation, no authentication, no field management beyond "replace what
the caller sent".
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from fake_kube import FakeKubeApi


@dataclass(frozen=True)
class Res:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False  # has a /status subresource

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES = [
    Res("", "v1", "pods", "Pod"),
    Res("", "v1", "services", "Service"),
    Res("", "v1", "configmaps", "ConfigMap"),
    Res("", "v1", "secrets", "Secret"),
    Res("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    Res("", "v1", "events", "Event"),
    Res("", "v1", "namespaces", "Namespace", namespaced=False),
    Res("apps", "v1", "statefulsets", "StatefulSet", status=True),
    Res("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", status=True),
    Res("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
        namespaced=False, status=True),
    Res("distsync.io", "v1alpha1", "distsyncclusters", "DistSyncCluster", status=True),
]
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}


@dataclass(frozen=True)
class Request:
    verb: str  # get list watch create patch update delete
    group: str
    resource: str  # plural, or plural/subresource
    namespace: str
    path: str


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902: add, remove, replace, test (what kopf sends)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~")
                          for p in op["path"].split("/")[1:]]
        target = doc
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        kind = op["op"]
        if isinstance(target, list):
            idx = len(target) if last == "-" else int(last)
            if kind == "add":
                target.insert(idx, op["value"])
            elif kind == "remove":
                target.pop(idx)
            elif kind == "replace":
                target[idx] = op["value"]
            elif kind == "test" and target[idx] != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            if kind in ("add", "replace"):
                if kind == "replace" and last not in target:
                    raise KeyError(op["path"])
                target[last] = op["value"]
            elif kind == "remove":
                del target[last]
            elif kind == "test" and target.get(last) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
    return doc


class FakeApiServer:
    def __init__(self, store: FakeKubeApi | None = None,
                 authorize: Callable[[Request], bool] | None = None):
        """`authorize(request)` False answers 403 Forbidden (e.g. the chart's RBAC)."""
        self.store = store or FakeKubeApi()
        self.authorize = authorize
        self.requests: list[Request] = []
        self.denied: list[Request] = []
        self.history: list[tuple[int, str, dict[str, Any]]] = []  # (rv, type, object)
        self._changed: asyncio.Event | None = None  # replaced (after set) on every change
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._closing = False
        self._rv = 1_000_000
        self.store.watchers.append(self._on_store_event)

    # -- lifecycle (a thread of its own, so the test's code and kubelet can block) --------

    def start(self) -> FakeApiServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-apiserver", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _serve(self) -> None:
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is None:
            return

        async def down() -> None:
            assert self._runner is not None
            self._closing = True  # open watches end at once
            self._notify()
            await asyncio.sleep(0.1)
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self) -> str:
        return json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "operator", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "operator",
                                                      "namespace": "ns"}}],
        })

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop (all store changes happen there)."""
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    # -- store events -> watch history -----------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _on_store_event(self, event: str, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self.history.append((int(obj["metadata"]["resourceVersion"]), event,
                             copy.deepcopy(obj)))
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        if changed is not None:
            changed.set()

    # -- HTTP -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.path == "/version":
            return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0"})
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            return web.json_response(self._groups())
        if parts[:1] == ["api"] and len(parts) == 2:
            return web.json_response(self._resource_list("", parts[1]))
        if parts[:1] == ["apis"] and len(parts) == 3:
            return web.json_response(self._resource_list(parts[1], parts[2]))
        if parts[:1] == ["api"]:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) > 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return self._status(404, "NotFound", f"no route {request.path}")
        namespace = ""
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        res = BY_PATH.get((group, version, rest[0]))
        if res is None:
            return self._status(404, "NotFound", f"unknown resource {request.path}")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch",
                "PUT": "update", "DELETE": "delete"}.get(request.method, "?")
        if verb == "list" and request.query.get("watch") in ("true", "1"):
            verb = "watch"
        req = Request(verb, group, res.plural + (f"/{sub}" if sub else ""), namespace,
                      request.path)
        if self.authorize is not None and not self.authorize(req):
            self.denied.append(req)
            return self._status(403, "Forbidden", f"{verb} {req.resource} is forbidden")
        self.requests.append(req)
        if verb == "watch":
            return await self._watch(request, res, namespace)
        if verb == "list":
            return web.json_response(self._list(res, namespace, request.query))
        body = await request.read()
        data = json.loads(body) if body else None
        if verb == "create":
            return self._create(res, namespace, data)
        assert name is not None
        if verb == "get":
            obj = self.store.obj(res.kind, namespace, name)
            return web.json_response(obj) if obj else self._status(404, "NotFound", name)
        if verb == "patch":
            ctype = request.headers.get("Content-Type", "")
            if "apply-patch" in ctype and self.store.obj(res.kind, namespace, name) is None:
                # An apply that creates the object is authorized as a create as well.
                create = Request("create", group, res.plural, namespace, request.path)
                if self.authorize is not None and not self.authorize(create):
                    self.denied.append(create)
                    return self._status(403, "Forbidden", f"create {res.plural} is forbidden")
                self.requests.append(create)
            return self._patch(res, namespace, name, sub, data, ctype)
        if verb == "delete":
            return self._delete(res, namespace, name)
        return self._status(405, "MethodNotAllowed", request.method)

    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": reason, "message": message, "code": code},
                                 status=code)

    def _groups(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for r in RESOURCES:
            if r.group:
                groups.setdefault(r.group, [])
                if r.version not in groups[r.group]:
                    groups[r.group].append(r.version)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
            for g, vs in groups.items()]}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        out = []
        for r in RESOURCES:
            if (r.group, r.version) != (group, version):
                continue
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            out.append({"name": r.plural, "singularName": r.kind.lower(), "kind": r.kind,
                        "namespaced": r.namespaced, "verbs": verbs})
            if r.status:
                out.append({"name": f"{r.plural}/status", "singularName": "", "kind": r.kind,
                            "namespaced": r.namespaced, "verbs": ["get", "patch", "update"]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                "resources": out}

    def _matching(self, res: Res, namespace: str, query: Any) -> list[dict[str, Any]]:
        sel = dict(kv.split("=", 1) for kv in query.get("labelSelector", "").split(",") if kv)
        out = []
        for (kind, ns, _), obj in sorted(self.store.objects.items()):
            if kind != res.kind or (namespace and ns != namespace):
                continue
            labels = obj["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in sel.items()):
                out.append(obj)
        return out

    def _list(self, res: Res, namespace: str, query: Any) -> dict[str, Any]:
        return {"apiVersion": res.group_version, "kind": f"{res.kind}List",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": copy.deepcopy(self._matching(res, namespace, query))}

    async def _watch(self, request: web.Request, res: Res, namespace: str
                     ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        since = int(request.query.get("resourceVersion") or self._rv)
        timeout = float(request.query.get("timeoutSeconds") or 60)
        deadline = asyncio.get_running_loop().time() + timeout
        seen = since
        assert self._changed is not None
        try:
            while True:
                changed = self._changed
                for rv, event, obj in list(self.history):
                    if rv <= seen or obj["kind"] != res.kind:
                        continue
                    if namespace and obj["metadata"].get("namespace") != namespace:
                        continue
                    seen = rv
                    line = json.dumps({"type": event, "object": obj}) + "\n"
                    await resp.write(line.encode())
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0 or self._closing:
                    break
                try:
                    await asyncio.wait_for(changed.wait(), min(left, 1.0))
                except TimeoutError:
                    pass
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the server stops
        return resp

    def _create(self, res: Res, namespace: str, obj: dict[str, Any]) -> web.Response:
        meta = obj.setdefault("metadata", {})
        if res.kind == "Event":  # recorded, not stored
            return web.json_response(obj, status=201)
        meta["namespace"] = namespace
        obj.setdefault("apiVersion", res.group_version)
        obj.setdefault("kind", res.kind)
        if self.store.obj(res.kind, namespace, meta["name"]) is not None:
            return self._status(409, "AlreadyExists", meta["name"])
        return web.json_response(self._put(obj), status=201)

    def _put(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        meta.setdefault("creationTimestamp",
                        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        meta.setdefault("generation", 1)
        return self.store.put(obj)

    def _patch(self, res: Res, namespace: str, name: str, sub: str | None, patch: Any,
               content_type: str) -> web.Response:
        old = self.store.obj(res.kind, namespace, name)
        if "apply-patch" in content_type:  # server-side apply: create or replace
            new = copy.deepcopy(patch)
            new["metadata"]["namespace"] = namespace
            if old is not None:
                for key in ("uid", "creationTimestamp", "generation", "finalizers"):
                    if key in old["metadata"]:
                        new["metadata"].setdefault(key, old["metadata"][key])
                if old.get("spec") != new.get("spec"):
                    new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            return web.json_response(self._put(new))
        if old is None:
            return self._status(404, "NotFound", name)
        if "json-patch" in content_type:  # RFC 6902 (kopf uses it for finalizers)
            try:
                new = json_patch(old, patch)
            except (KeyError, IndexError, ValueError) as e:
                return self._status(422, "Invalid", f"json patch: {e}")
            if sub == "status":
                new = {**old, "status": new.get("status")}
            elif res.status:
                new["status"] = old.get("status")
        elif "merge-patch" not in content_type:
            return self._status(415, "UnsupportedMediaType", content_type)
        elif sub == "status":
            new = merge_patch(old, {"status": patch.get("status")})
        else:
            patch = {k: v for k, v in patch.items() if not (res.status and k == "status")}
            new = merge_patch(old, patch)
        if new.get("status") is None:
            new.pop("status", None)
            if old.get("spec") != new.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self.store.objects.pop((res.kind, namespace, name))  # the last finalizer is gone
            self._on_store_event("DELETED", new)
            return web.json_response(new)
        return web.json_response(self.store.put(new))

    def _delete(self, res: Res, namespace: str, name: str) -> web.Response:
        obj = self.store.obj(res.kind, namespace, name)
        if obj is None:
            return self._status(404, "NotFound", name)
        if obj["metadata"].get("finalizers"):
            new = copy.deepcopy(obj)
            new["metadata"].setdefault("deletionTimestamp",
                                       datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            return web.json_response(self.store.put(new))
        self.store.objects.pop((res.kind, namespace, name))
        self._on_store_event("DELETED", obj)
        return web.json_response(obj)

    # -- helpers for tests ----------------------------------------------------------------

    def update_spec(self, kind: str, namespace: str, name: str, **spec: Any) -> None:
        """What `kubectl scale` / `kubectl apply` would do: a spec change, a new generation."""
        def change() -> None:
            obj = copy.deepcopy(self.store.obj(kind, namespace, name))
            obj["spec"].update(spec)
            obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
            self.store.put(obj)
        self.call(change)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        res = next(r for r in RESOURCES if r.kind == kind)
        self.call(lambda: self._delete(res, namespace, name))

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.call(lambda: copy.deepcopy(self.store.obj(kind, namespace, name)))
