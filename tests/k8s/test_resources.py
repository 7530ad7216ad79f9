"""The objects the operator builds (resources.py) and how a pod configures itself from them
(distsync.cli._pod_defaults)."""

from __future__ import annotations

from k8s_helpers import k8s_validate, render

from distsync.cli import _pod_defaults
from distsync_operator import resources as res
from distsync_operator.spec import Defaults, parse_spec

OWNER = {"apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster",
         "metadata": {"name": "demo", "namespace": "prod", "uid": "u-9"}}


def spec(**raw: object):
    chk = parse_spec("demo", {"replicas": 3, **raw})
    assert chk.spec is not None, chk.errors
    return chk.spec


def test_statefulset():
    sts = res.statefulset(OWNER, spec(resources={"requests": {"cpu": "100m"}},
                                      storage={"size": "2Gi", "storageClassName": "fast"}), 3)
    k8s_validate(sts)
    s = sts["spec"]
    assert s["podManagementPolicy"] == "Parallel" and s["serviceName"] == "demo-peers"
    pod = s["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["node"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c[
        "env"]
    assert c["envFrom"] == [{"configMapRef": {"name": "demo-config"}},
                            {"secretRef": {"name": "demo-secret"}}]
    assert c["resources"] == {"requests": {"cpu": "100m"}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    (pvc,) = s["volumeClaimTemplates"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    assert s["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "7001",
        "prometheus.io/path": "/metrics"}
    assert sts["metadata"]["ownerReferences"] == [{
        "apiVersion": "distsync.io/v1alpha1", "kind": "DistSyncCluster", "name": "demo",
        "uid": "u-9", "controller": True, "blockOwnerDeletion": True}]


def test_metrics_off_means_no_scrape_annotations():
    sts = res.statefulset(OWNER, spec(metrics={"enabled": False}), 3)
    assert sts["spec"]["template"]["metadata"]["annotations"] == {}


def test_services_config_secret_pdb():
    sp = spec(redis={"mode": "External", "url": "redis://r:6379/0"})
    peers, client = res.peer_service(OWNER, sp), res.client_service(OWNER, sp)
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"]
    assert peers["metadata"]["labels"]["distsync.io/service"] == "peers"
    assert client["spec"]["type"] == "ClusterIP"
    cm = res.config_map(OWNER, sp, founding=3, bootstrapped=False)
    assert cm["data"]["DISTSYNC_REDIS_URL"] == "redis://r:6379/0"
    assert cm["data"]["DISTSYNC_LISTEN"] == "0.0.0.0:7001"
    sec = res.secret(OWNER, "s3cret-value-of-enough-length")
    assert sec["stringData"] == {"DISTSYNC_CLUSTER_SECRET": "s3cret-value-of-enough-length"}
    for obj in (peers, client, cm, sec, res.pdb(OWNER, 5)):
        k8s_validate(obj)
    pw = res.statefulset(OWNER, spec(redis={"mode": "External", "url": "redis://r:1",
                                            "passwordSecretRef": {"name": "r", "key": "pw"}}), 3)
    env = pw["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "DISTSYNC_REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "r", "key": "pw"}}} in env


def test_pod_defaults_founders_bootstrap_and_later_pods_join(monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", "prod")
    monkeypatch.setenv("DISTSYNC_PEER_SERVICE", "demo-peers")
    monkeypatch.setenv("DISTSYNC_STATEFULSET_REPLICAS", "3")
    monkeypatch.setenv("POD_NAME", "demo-2")
    d = _pod_defaults()
    assert d["id"] == "demo-2" and "join" not in d
    assert d["advertise"] == "demo-2.demo-peers.prod.svc.cluster.local:7001"
    assert d["peers"].split(",")[0] == "demo-0=demo-0.demo-peers.prod.svc.cluster.local:7001"
    monkeypatch.setenv("POD_NAME", "demo-3")  # added by scaling up
    assert _pod_defaults()["join"] == "1"


def test_node_pods_take_scheduling_settings_from_the_cr_over_the_chart_defaults():
    """F8 of issue 18: the node pods had no imagePullSecrets, nodeSelector, tolerations,
    affinity, priorityClassName, podAnnotations or serviceAccountName, and a token."""
    defaults = Defaults(pod={"imagePullSecrets": [{"name": "regcred"}],
                             "nodeSelector": {"disk": "ssd"}, "priorityClassName": "high"})
    check = parse_spec("demo", {"replicas": 3, "nodeSelector": {"disk": "nvme"},
                                "podAnnotations": {"team": "infra"},
                                "tolerations": [{"key": "x", "operator": "Exists"}],
                                "affinity": {"nodeAffinity": {"x": 1}},
                                "serviceAccountName": "nodes"}, defaults)
    owner = {"metadata": {"name": "demo", "namespace": "ns", "uid": "u"}}
    tmpl = res.statefulset(owner, check.spec, 3)["spec"]["template"]
    pod = tmpl["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]  # the chart's default
    assert pod["nodeSelector"] == {"disk": "nvme"}  # the CR's wins
    assert pod["priorityClassName"] == "high" and pod["serviceAccountName"] == "nodes"
    assert pod["tolerations"] == [{"key": "x", "operator": "Exists"}]
    assert pod["automountServiceAccountToken"] is False
    assert pod["affinity"]["nodeAffinity"] == {"x": 1} and pod["affinity"]["podAntiAffinity"]
    assert tmpl["metadata"]["annotations"]["team"] == "infra"
    assert tmpl["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    bad = parse_spec("demo", {"nodeSelector": {"disk": 1}, "imagePullSecrets": ["regcred"]})
    assert bad.spec is None and len(bad.errors) == 2


def test_cluster_domain_is_not_hard_coded(monkeypatch):
    """Issue 18: cluster.local was hard-coded for peer DNS and the Redis URL."""
    cm = res.config_map(OWNER, parse_spec("demo", {}, Defaults(cluster_domain="k8s.corp"))
                        .spec, 3, False)
    assert cm["data"]["DISTSYNC_CLUSTER_DOMAIN"] == "k8s.corp"
    for k, v in {**cm["data"], "POD_NAME": "demo-1", "POD_NAMESPACE": "prod"}.items():
        monkeypatch.setenv(k, v)
    d = _pod_defaults()
    assert d["advertise"] == "demo-1.demo-peers.prod.svc.k8s.corp:7001"
    objs = render("--set", "clusterDomain=k8s.corp")
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DISTSYNC_OPERATOR_REDIS_URL"] == "redis://t-distsync-redis.ns.svc.k8s.corp:6379/0"
    assert env["DISTSYNC_OPERATOR_CLUSTER_DOMAIN"] == "k8s.corp"
