"""A STAND-IN kubelet for the envtest tier: runs the pods that the real controller manager
creates (StatefulSet, Deployment -> ReplicaSet) as real processes on this machine.

There is no kubelet, container runtime, scheduler, kube-proxy or cluster DNS here, so this
plays all of them, for the three images the chart uses and nothing else:

- `distsync node` pods   -> `python -m distsync.cli node ...` (the container's args)
- `distsync-operator`    -> `python -m distsync_operator.main ...` (the container's command)
- the in-chart Redis     -> the machine's `redis-server` with the container's args

Each pod gets the environment its container would get (`env` with values, field, ConfigMap
and Secret references; `envFrom`), and runs in a private mount namespace (`unshare -m`) so
that, as in a container, it sees its own files. What differs from a real node, and why:

1. Network: a pod gets its own loopback address (127.1.x.y, stable per namespace/name) as
   its podIP; "0.0.0.0" in env values and args becomes that address (a pod's wildcard is
   its own network namespace; here all pods share the host's).
2. DNS: the pod's /etc/hosts is bind-mounted from one file this kubelet appends to:
   `<hostname>.<subdomain>.<ns>.svc.cluster.local` for StatefulSet pods (headless Service
   records, published before readiness as publishNotReadyAddresses does) and
   `<service>.<ns>.svc.cluster.local` -> the first pod the Service selects (no ClusterIPs:
   no kube-proxy).
3. Volumes: a PVC is a directory named after the claim's uid (a new claim is empty, a kept
   claim keeps its data across pod restarts), an emptyDir a fresh directory. Mount paths
   under /run (the ServiceAccount token at /var/run/secrets/...) are bind-mounted into a
   private tmpfs on /run; other mount paths are rewritten to the host directory in env
   values and args (e.g. DISTSYNC_DATA_DIR=/data/raft), because the host has no /data.
4. The apiserver Service: KUBERNETES_SERVICE_HOST/PORT point at the envtest apiserver (its
   certificate names 127.0.0.1), so in-cluster configuration works with the pod's token.
5. Probes: readiness is the container's httpGet probe (or a TCP connect for other probe
   kinds), polled every loop; liveness is not enforced; a process that exits is restarted
   (restartPolicy Always) and counted in restartCount.
6. Pods with restartPolicy Never/OnFailure (a Job's) end Succeeded or Failed by their exit
   code, and are not restarted.
7. Deletion: a pod with a deletionTimestamp gets SIGTERM (SIGKILL after its grace period,
   at most 10 s), then is deleted with grace 0, as a kubelet does.

For the tests: `hold(namespace, labels)` keeps matching pods Pending (no process), e.g. to
see what the operator does before any node answers; `pause`/`resume` take a pod's process
down and back (a node that is down); `run_in_cluster` runs a client with the cluster's DNS.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("envtest.kubelet")

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Running:
    proc: subprocess.Popen
    ip: str
    ports: dict[str, int]
    probe: dict[str, Any] | None
    argv: list[str]
    env: dict[str, str]
    root: Path
    started: str = field(default_factory=_now)
    restarts: int = 0
    ready: bool = False
    log_path: Path | None = None


class StandInKubelet:
    def __init__(self, api: client.ApiClient, workdir: Path, apiserver_port: int,
                 operator_argv: Callable[[list[str]], list[str]] | None = None):
        """`operator_argv(args)`: the command line for the operator container (default
        `python -m distsync_operator.main ARGS`)."""
        self.operator_argv = operator_argv or (
            lambda args: [sys.executable, "-m", "distsync_operator.main", *args])
        self.core = client.CoreV1Api(api)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.hosts = self.workdir / "hosts"
        self.hosts.write_text("127.0.0.1 localhost\n")
        self.apiserver_port = apiserver_port
        self.pods: dict[tuple[str, str], Running] = {}
        self.ips: dict[tuple[str, str], str] = {}
        self.published: set[str] = set()
        self.held: dict[str, dict[str, str]] = {}  # namespace -> labels ({}: every pod)
        self.paused: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> StandInKubelet:
        self._thread = threading.Thread(target=self._loop, name="stand-in-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for key in list(self.pods):
            self._kill(key)

    def hold(self, namespace: str, labels: dict[str, str] | None = None) -> None:
        """Leave the namespace's pods (those with all of `labels`, or all) Pending."""
        self.held[namespace] = dict(labels or {})

    def pause(self, namespace: str, name: str) -> None:
        """The pod's process dies and is not restarted (the pod stays, unready) until
        `resume`: a node that is down."""
        with self._lock:
            self.paused.add((namespace, name))
            self.kill_process(namespace, name)

    def resume(self, namespace: str, name: str) -> None:
        self.paused.discard((namespace, name))

    def _held(self, pod: Any) -> bool:
        ns = pod.metadata.namespace
        if ns.startswith("kube-"):
            return True
        if ns not in self.held:
            return False
        labels = pod.metadata.labels or {}
        return all(labels.get(k) == v for k, v in self.held[ns].items())

    def forget(self, namespace: str) -> None:
        """Stop every process of the namespace and leave its pods alone from now on."""
        self.held[namespace] = {}
        with self._lock:
            for key in [k for k in self.pods if k[0] == namespace]:
                self._kill(key)

    def running(self, namespace: str, name: str) -> Running | None:
        return self.pods.get((namespace, name))

    def log_of(self, namespace: str, name: str, lines: int = 40) -> str:
        r = self.pods.get((namespace, name))
        if r is None or r.log_path is None or not r.log_path.exists():
            return ""
        return "\n".join(r.log_path.read_text(errors="replace").splitlines()[-lines:])

    def run_in_cluster(self, argv: list[str], timeout: float = 60
                       ) -> subprocess.CompletedProcess[str]:
        """Run a command as a client inside the cluster would: it resolves the cluster's
        DNS names (the hosts file of 2. above) and reaches the pods' addresses."""
        script = 'mount --bind "$DS_HOSTS" /etc/hosts && unset DS_HOSTS && exec "$@"'
        return subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "client", *argv],
            env={**os.environ, "DS_HOSTS": str(self.hosts)}, capture_output=True, text=True,
            timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self.sync()
            except Exception:  # noqa: BLE001 - a kubelet keeps going; the tests see the log
                log.exception("sync failed")
            self._stop.wait(0.3)

    # -- one pass ----------------------------------------------------------------------

    def sync(self) -> None:
        pods = self.core.list_pod_for_all_namespaces().items
        seen = set()
        for pod in pods:
            ns, name = pod.metadata.namespace, pod.metadata.name
            if self._held(pod):
                continue
            key = (ns, name)
            seen.add(key)
            if pod.metadata.deletion_timestamp is not None:
                self._kill(key, grace=pod.spec.termination_grace_period_seconds)
                try:
                    self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
                except ApiException as e:
                    if e.status != 404:
                        raise
                continue
            r = self.pods.get(key)
            if r is not None and key in self.paused:
                self._report(pod, r)
                continue
            if r is not None and r.proc.poll() is not None and (
                    pod.spec.restart_policy or "Always") != "Always":
                self._report_exit(pod, r)  # a Job's pod: Succeeded or Failed, for good
                continue
            if r is not None and r.proc.poll() is not None:  # exited: restart (Always)
                log.info("%s/%s exited with %s; restarting", ns, name, r.proc.returncode)
                restarts = r.restarts + 1
                r = self._start(pod)
                if r is not None:
                    r.restarts = restarts
            elif r is None:
                r = self._start(pod)
            if r is not None:
                self._report(pod, r)
        for key in [k for k in self.pods if k not in seen]:  # force-deleted elsewhere
            self._kill(key)

    # -- starting a pod ----------------------------------------------------------------

    def _ip(self, ns: str, name: str) -> str:
        key = (ns, name)
        if key not in self.ips:
            n = len(self.ips)
            self.ips[key] = f"127.1.{n // 250}.{n % 250 + 2}"
        return self.ips[key]

    def _publish(self, line: str) -> None:
        if line in self.published:
            return
        self.published.add(line)
        with open(self.hosts, "a") as f:  # append in place: the bind mounts see the inode
            f.write(line + "\n")

    def _secret(self, ns: str, name: str) -> dict[str, str] | None:
        try:
            s = self.core.read_namespaced_secret(name, ns)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def _config_map(self, ns: str, name: str) -> dict[str, str] | None:
        try:
            return dict(self.core.read_namespaced_config_map(name, ns).data or {})
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def _env(self, pod: Any, c: Any, ip: str) -> dict[str, str] | None:
        """The container's environment; None when a referenced object is missing (the
        real kubelet reports CreateContainerConfigError and retries)."""
        ns = pod.metadata.namespace
        env: dict[str, str] = {}
        for src in c.env_from or []:
            if src.config_map_ref is not None:
                data = self._config_map(ns, src.config_map_ref.name)
                optional = bool(src.config_map_ref.optional)
            else:
                data = self._secret(ns, src.secret_ref.name)
                optional = bool(src.secret_ref.optional)
            if data is None and not optional:
                return None
            env.update({f"{src.prefix or ''}{k}": v for k, v in (data or {}).items()})
        fields = {"metadata.name": pod.metadata.name, "metadata.namespace": ns,
                  "status.podIP": ip, "spec.serviceAccountName":
                      pod.spec.service_account_name or "default",
                  "spec.nodeName": "envtest"}
        for e in c.env or []:
            if e.value_from is None:
                env[e.name] = e.value or ""
                continue
            vf = e.value_from
            if vf.field_ref is not None:
                env[e.name] = fields[vf.field_ref.field_path]
            elif (ref := vf.secret_key_ref or vf.config_map_key_ref) is not None:
                read = self._secret if vf.secret_key_ref is not None else self._config_map
                data = read(ns, ref.name)
                if data is None or ref.key not in data:
                    if ref.optional:
                        continue
                    return None
                env[e.name] = data[ref.key]
        return env

    def _argv(self, c: Any) -> tuple[list[str], list[str]] | None:
        """(what this kubelet runs the image's entrypoint as, the pod's own arguments).
        Only the pod's arguments get the mount-path rewriting: the host-side prefix names
        files of this checkout, which may well live under a path a pod mounts (/tmp)."""
        cmd, args = list(c.command or []), list(c.args or [])
        if cmd[:1] == ["distsync-operator"]:
            return self.operator_argv([]), [*cmd[1:], *args]
        if not cmd and args[:1] == ["node"]:
            return [sys.executable, "-m", "distsync.cli"], args
        if (c.image or "").split("/")[-1].startswith("redis") and args[:1] == ["redis-server"]:
            return [shutil.which("redis-server") or "redis-server"], args[1:]
        return None

    def _volumes(self, pod: Any, root: Path) -> dict[str, Path] | None:
        """volume name -> host directory (filled for Secrets and projected tokens)."""
        ns = pod.metadata.namespace
        out: dict[str, Path] = {}
        for v in pod.spec.volumes or []:
            if v.persistent_volume_claim is not None:
                try:
                    pvc = self.core.read_namespaced_persistent_volume_claim(
                        v.persistent_volume_claim.claim_name, ns)
                except ApiException as e:
                    if e.status == 404:
                        return None
                    raise
                d = self.workdir / "pvc" / pvc.metadata.uid
            elif v.secret is not None:
                data = self._secret(ns, v.secret.secret_name)
                if data is None:
                    return None
                d = root / "vol" / v.name
                d.mkdir(parents=True, exist_ok=True)
                for k, val in data.items():
                    (d / k).write_text(val)
            else:  # emptyDir and anything else: a fresh directory
                d = root / "vol" / v.name
            d.mkdir(parents=True, exist_ok=True)
            out[v.name] = d
        return out

    def _start(self, pod: Any) -> Running | None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        c = pod.spec.containers[0]
        parts = self._argv(c)
        if parts is None:
            log.warning("%s/%s: no stand-in for image %s", ns, name, c.image)
            return None
        ip = self._ip(ns, name)
        root = self.workdir / "pods" / ns / name
        shutil.rmtree(root / "vol", ignore_errors=True)  # emptyDirs are per pod instance
        root.mkdir(parents=True, exist_ok=True)
        env = self._env(pod, c, ip)
        vols = self._volumes(pod, root)
        if env is None or vols is None:
            return None
        # Paths: /run mounts go into the pod's private tmpfs; others are rewritten.
        run_mounts: list[tuple[Path, str]] = []
        rewrite: list[tuple[str, str]] = []
        for m in c.volume_mounts or []:
            src = vols[m.name] / (m.sub_path or "")
            path = m.mount_path.rstrip("/")
            if path.startswith(("/run/", "/var/run/")):
                run_mounts.append((src, path.replace("/var/run/", "/run/", 1)))
            else:
                rewrite.append((path, str(src)))

        def fix(s: str) -> str:
            s = s.replace("0.0.0.0", ip)
            for old, new in sorted(rewrite, key=lambda p: -len(p[0])):
                if s == old or s.startswith(old + "/"):
                    return new + s[len(old):]
            return s

        env = {k: fix(v) for k, v in env.items()}
        argv = [*parts[0], *(fix(a) for a in parts[1])]
        if argv[0].endswith("redis-server"):
            argv += ["--bind", ip]
        # DNS records: the pod's own (StatefulSet pods), and Services that select it.
        if pod.spec.hostname and pod.spec.subdomain:
            fq = f"{pod.spec.hostname}.{pod.spec.subdomain}.{ns}.svc"
            self._publish(f"{ip} {fq}.cluster.local {fq}")
        labels = pod.metadata.labels or {}
        for svc in self.core.list_namespaced_service(ns).items:
            sel = svc.spec.selector or {}
            if sel and svc.spec.cluster_ip != "None" and all(
                    labels.get(k) == v for k, v in sel.items()):
                fq = f"{svc.metadata.name}.{ns}.svc"
                self._publish(f"{ip} {fq}.cluster.local {fq}")
        ports = {p.name or str(p.container_port): p.container_port for p in c.ports or []}
        probe = None
        if c.readiness_probe is not None:
            hg = c.readiness_probe.http_get
            if hg is not None:
                port = hg.port if isinstance(hg.port, int) else ports.get(hg.port)
                probe = {"http": f"http://{ip}:{port}{hg.path or '/'}"}
            elif ports:
                probe = {"tcp": (ip, next(iter(ports.values())))}
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(root),
                "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "HOSTNAME": name,
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(self.apiserver_port)}
        full_env = {**base, **env}
        # The wrapper: a private mount namespace with the cluster's hosts file and /run.
        script = ["set -e", 'mount --bind "$DS_HOSTS" /etc/hosts']
        if run_mounts:
            script.append("mount -t tmpfs tmpfs /run")
            for i, (_src, dst) in enumerate(run_mounts):
                script += [f"mkdir -p '{dst}'", f'mount --bind "$DS_VOL{i}" \'{dst}\'']
        script += ["unset DS_HOSTS " + " ".join(f"DS_VOL{i}" for i in range(len(run_mounts))),
                   'exec "$@"']
        wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c", "\n".join(script),
                   "pod"]
        extra = {"DS_HOSTS": str(self.hosts),
                 **{f"DS_VOL{i}": str(src) for i, (src, _) in enumerate(run_mounts)}}
        log_path = root / "container.log"
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen([*wrapper, *argv], stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**full_env, **extra},
                                    cwd=str(root), start_new_session=True)
        log.info("%s/%s started as pid %d on %s: %s", ns, name, proc.pid, ip, " ".join(argv))
        r = Running(proc, ip, ports, probe, argv, env, root, log_path=log_path)
        self.pods[(ns, name)] = r
        return r

    # -- status ------------------------------------------------------------------------

    @staticmethod
    def _probe(r: Running) -> bool:
        if r.proc.poll() is not None:
            return False
        if r.probe is None:
            return True
        try:
            if "http" in r.probe:
                with urllib.request.urlopen(r.probe["http"], timeout=1) as resp:
                    return 200 <= resp.status < 400
            with socket.create_connection(r.probe["tcp"], timeout=1):
                return True
        except OSError:
            return False

    def _report(self, pod: Any, r: Running) -> None:
        ok = self._probe(r)
        st = pod.status
        cur_ready = any(cnd.type == "Ready" and cnd.status == "True"
                        for cnd in st.conditions or [])
        restarts = (st.container_statuses or [None])[0]
        if (st.pod_ip == r.ip and st.phase == "Running" and cur_ready == ok and restarts
                is not None and restarts.restart_count == r.restarts):
            return
        flag = "True" if ok else "False"
        c = pod.spec.containers[0]
        body = {"status": {
            "phase": "Running", "podIP": r.ip, "podIPs": [{"ip": r.ip}],
            "hostIP": "127.0.0.1", "startTime": r.started,
            "conditions": [{"type": t, "status": s, "lastTransitionTime": _now()} for t, s in
                           (("Initialized", "True"), ("PodScheduled", "True"),
                            ("ContainersReady", flag), ("Ready", flag))],
            "containerStatuses": [{
                "name": c.name, "image": c.image, "imageID": "", "ready": ok,
                "restartCount": r.restarts, "started": True,
                "state": {"running": {"startedAt": r.started}}}],
        }}
        self._patch_status(pod, body)

    def _patch_status(self, pod: Any, body: dict[str, Any]) -> None:
        """Write a pod's status; a pod deleted or changed meanwhile is reported next round."""
        try:
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace,
                                                  body)
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def _report_exit(self, pod: Any, r: Running) -> None:
        code = r.proc.returncode
        phase = "Succeeded" if code == 0 else "Failed"
        if pod.status.phase == phase:
            return
        c = pod.spec.containers[0]
        body = {"status": {
            "phase": phase, "podIP": r.ip, "podIPs": [{"ip": r.ip}], "hostIP": "127.0.0.1",
            "startTime": r.started,
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": _now()}],
            "containerStatuses": [{
                "name": c.name, "image": c.image, "imageID": "", "ready": False,
                "restartCount": r.restarts, "started": False,
                "state": {"terminated": {"exitCode": code, "startedAt": r.started,
                                         "finishedAt": _now(),
                                         "reason": "Completed" if code == 0 else "Error"}}}],
        }}
        self._patch_status(pod, body)

    # -- stopping ----------------------------------------------------------------------

    def kill_process(self, namespace: str, name: str, sig: int = signal.SIGKILL) -> None:
        """A crash of the pod's process (the pod object stays; it is restarted)."""
        r = self.pods.get((namespace, name))
        if r is not None and r.proc.poll() is None:
            os.killpg(r.proc.pid, sig)
            r.proc.wait(timeout=15)

    def _kill(self, key: tuple[str, str], grace: int | None = 10) -> None:
        self.paused.discard(key)
        r = self.pods.pop(key, None)
        if r is None or r.proc.poll() is not None:
            return
        try:
            os.killpg(r.proc.pid, signal.SIGTERM)
            r.proc.wait(timeout=min(grace if grace is not None else 10, 10))
        except subprocess.TimeoutExpired:
            os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait()
        except ProcessLookupError:
            pass
        log.info("%s/%s stopped", *key)
