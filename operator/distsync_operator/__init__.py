"""Kubernetes operator for DistSyncCluster (stub until the Kubernetes issue)."""
