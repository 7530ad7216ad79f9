"""Testing tools that ship with distsync so that both the test suite and `distsync chaos`
(run by hand) can use them:

* `history`: a recorder of client operations (invoke / ok / fail / info) with monotonic time
  bounds, saved and loaded as JSON lines.
* `linearizability`: a Wing-Gong / Porcupine-style linearizability checker with per-key
  partitioning, and models for a kv register and a mutex; `check_history` runs a
  workload's checks on a saved history (`python -m distsync.testing.check_history`).
* `harness`: clusters of real `distsync node` processes, in network namespaces (real network
  faults) or on loopback (process faults only).
* `nemesis`: fault schedules chosen by a seed, and the task that injects them.
* `workload`, `wl_kv`, `wl_locks`, `wl_queue`, `wl_cache`, `workloads`: what clients do
  during a run and how the history is checked, one class per service, by name in
  `workloads.WORKLOADS`.
* `chaos`: a run = cluster + workloads + nemesis + checks, with a summary table; also
  `python -m distsync.testing.chaos`.
"""
