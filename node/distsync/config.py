"""A node's whole configuration, as `distsync node` reads it (cli.py: options and
`DISTSYNC_*` environment variables, the only place that reads them). The composition root
(server.py) hands each part its piece: the driver its timing and founding members, the
services their quotas, the API its limits and tokens, the cache its backend and capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NodeConfig:
    node_id: str
    listen: str = "127.0.0.1:7001"
    advertise: str = ""
    peers: dict[str, str] = field(default_factory=dict)  # founding members, self included
    data_dir: str = "./data"
    join: bool = False  # start empty and wait to be added by the leader
    cluster: str = "distsync"
    tick_ms: int = 50
    election_ticks: int = 10
    snapshot_threshold: int = 10_000
    request_timeout: float = 5.0
    max_body_bytes: int = 1 << 20
    max_value_bytes: int = 256 << 10  # one kv value, as compact JSON
    # Quotas (services/quotas.py; README "Quotas"): replicated by the leader, so keep them
    # alike on every node.
    max_sessions_per_client: int = 1000  # open lock sessions per client address
    max_sessions: int = 100_000
    max_queues: int = 1_000
    max_locks: int = 100_000
    max_waiters: int = 100_000
    max_kv_keys: int = 1_000_000
    max_state_bytes: int = 512 << 20
    # Connection limits (api/http_server.py, api/body.py; README "Connection limits").
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0
    max_connections: int = 4096
    max_connections_per_client: int = 512
    # Security (README "Security"). Secrets stay out of repr() and so out of logs.
    cluster_secret: str = field(default="", repr=False)  # peer HMAC; "" = open cluster
    read_token: str = field(default="", repr=False)  # API bearer tokens per role, each a
    write_token: str = field(default="", repr=False)  # comma-separated list (rotation);
    admin_token: str = field(default="", repr=False)  # all empty = client auth off
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    # The coherent cache (cache/; README "Cache"). `redis_url` "" = an in-process store,
    # one node only.
    redis_url: str = ""
    cache_max_bytes: int = 64 << 20  # the near cache's capacity on this node
    cache_max_value_bytes: int = 512 << 10
    cache_lease_ms: int = 3000  # how long a node may serve lines from a home it cannot reach
    # Watches (watch.py, services/kv_history.py; README "Watches"): per node, not replicated.
    watch_history_events: int = 100_000  # kv changes kept for watches to start from
    watch_history_bytes: int = 64 << 20  # ... and their bytes (keys, values, ~190 per event)
    max_watchers: int = 10_000
    max_watchers_per_client: int = 1000  # of them per client (token + Client-Id, or address)
    watch_buffer_events: int = 1000  # events queued per watcher before slow_consumer

    @property
    def address(self) -> str:
        return self.advertise or self.listen
