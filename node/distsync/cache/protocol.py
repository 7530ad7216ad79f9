"""Messages between nodes: a requester and a key's home, and the home and other holders.

Every message is a msgpack map sent as `POST /v1/internal/cache/{op}` (or a direct call in
tests and benchmarks, see transport.py). Requests carry `src` (the sender's id) and, where
they concern a key, `key`. Replies from a home carry `inc` (the home's incarnation: a home
that restarted has lost its directory, and its former grants are dropped) and `lease_ms`
(how long the requester may keep serving lines from this home, measured from when it sent
the request), and `resync` when the home has revoked this node's lines unilaterally.

Requester -> home
  GETS  {key}              read miss. Reply GRANT {state: E|S|"" (uncacheable), value, version,
                           ttl_ms} or {value: None} (absent).
  PUTX  {key, value,       write (value None: delete), written through by the home. The home
         ttl_ms}           invalidates every other copy, then stores the value in the backend
                           in one step that moves the version counter on (fencing older
                           owners), and replies GRANT {state: E (or I after a delete),
                           version, existed}. The requester drops its own copy before sending.
  HB    {resynced}         lease renewal for all lines from this home.
  FILL  {key, lease_ms,    single flight of a miss (fill.py): {value, version} if the backend
         token?, cancel?}  has it, else {token, lease_ms} to the first asker (it loads and
                           PUTs), {wait_ms} to the others until a PUTX lands or the lease ends.
Home -> holder
  INV   {keys, conf}       drop these lines (after any write in flight on them), answer ACK.
                           Concurrent invalidations to one holder travel as one message.
                           `conf` (sent by a home that has no directory yet) makes the holder
                           first apply the Raft configuration the home acts under.
  FETCH {key}              downgrade E/M -> S and send the value back (write-back of M first).
Any member -> the Raft leader
  CONFIRM {}               ReadIndex on the member's behalf: reply {index}, an applied index
                           covering everything committed before the request arrived. A
                           member that has applied up to it knows its membership was
                           current when it sent the request (service.py: a home's own lease).
Anyone
  STATE {key}              this node's line for `key` (for the state API).
"""

from __future__ import annotations

from typing import Any

import msgpack

GETS, PUTX, HB, INV, FETCH, STATE = "gets", "putx", "hb", "inv", "fetch", "state"
FILL, CONFIRM = "fill", "confirm"
OPS = (GETS, PUTX, HB, INV, FETCH, STATE, FILL, CONFIRM)


class PeerUnreachable(Exception):
    """The peer did not answer (refused, timed out, or answered garbage)."""


class NotHome(Exception):
    """The receiver is not the key's home in its own view of the ring (views differ while a
    membership change is being applied); the requester retries."""

    def __init__(self, key: str, home: str | None):
        super().__init__(f"not the home of {key!r} (home: {home})")
        self.key, self.home = key, home


class HomeUnavailable(Exception):
    """The key's home cannot be reached; writes fail (retryable), reads go to the backend."""

    def __init__(self, key: str, home: str):
        super().__init__(f"home {home} of {key!r} is unreachable")
        self.key, self.home = key, home


def encode(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)


def decode(data: bytes) -> dict[str, Any]:
    obj = msgpack.unpackb(data, raw=False)
    if not isinstance(obj, dict):
        raise ValueError("message must be a map")
    return obj
