"""Kubernetes operator for `DistSyncCluster` (group distsync.io, version v1alpha1).

- `spec.py`       parse and validate a DistSyncCluster spec (pure)
- `resources.py`  build the Services, StatefulSet, PodDisruptionBudget, ConfigMap, Secret (pure)
- `reconcile.py`  spec + observed state -> desired objects and the next safe step (pure)
- `kube.py`       the small Kubernetes API interface the handlers use, and its REST implementation
- `nodes.py`      observe the distsync pods over HTTP and perform membership steps
- `driver.py`     one pass: observe -> reconcile.plan -> apply (what every handler runs)
- `handlers.py`   thin kopf glue; `main.py` the `distsync-operator` entry point
"""

GROUP = "distsync.io"
VERSION = "v1alpha1"
KIND = "DistSyncCluster"
PLURAL = "distsyncclusters"
API_VERSION = f"{GROUP}/{VERSION}"
FIELD_MANAGER = "distsync-operator"
