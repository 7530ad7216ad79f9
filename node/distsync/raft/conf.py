"""Single-server membership changes, as in section 4.1 of Ongaro's dissertation.

A change is one of: add a learner, promote a learner to voter, remove a member. Because each
change moves at most one voter, any two consecutive majorities overlap, so no joint consensus
is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import msgpack

from .types import ConfState


class ConfOp(IntEnum):
    ADD_LEARNER = 0
    PROMOTE = 1
    REMOVE = 2
    ADD_VOTER = 3
    # The founding membership, whole, in each of the entries 1..n every founding member writes.
    BOOTSTRAP = 4


class ConfChangeError(ValueError):
    pass


@dataclass(slots=True, frozen=True)
class ConfChange:
    op: ConfOp
    node_id: str
    addr: str = ""
    # BOOTSTRAP only: every founding member as (id, addr).
    members: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        return msgpack.packb(
            [int(self.op), self.node_id, self.addr, [list(m) for m in self.members]]
        )

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        op, node_id, addr, *rest = msgpack.unpackb(data)
        members = tuple((a, b) for a, b in rest[0]) if rest else ()
        return ConfChange(ConfOp(op), node_id, addr, members)


def check(conf: ConfState, cc: ConfChange) -> None:
    """Raise ConfChangeError if `cc` is not a valid single-server step from `conf`."""
    if cc.op == ConfOp.BOOTSTRAP:
        if conf.members():
            raise ConfChangeError("the cluster is already bootstrapped")
        if not cc.members:
            raise ConfChangeError("bootstrap needs at least one member")
    elif cc.op in (ConfOp.ADD_LEARNER, ConfOp.ADD_VOTER):
        if cc.node_id in conf.members():
            raise ConfChangeError(f"{cc.node_id} is already a member")
    elif cc.op == ConfOp.PROMOTE:
        if cc.node_id not in conf.learners:
            raise ConfChangeError(f"{cc.node_id} is not a learner")
    elif cc.op == ConfOp.REMOVE:
        if cc.node_id not in conf.members():
            raise ConfChangeError(f"{cc.node_id} is not a member")
        if conf.voters == frozenset({cc.node_id}):
            raise ConfChangeError("cannot remove the last voter")


def apply(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after `cc`. Invalid changes leave `conf` unchanged, so every node
    that applies the same log reaches the same configuration."""
    try:
        check(conf, cc)
    except ConfChangeError:
        return conf
    addrs = conf.addr_map()
    voters, learners = set(conf.voters), set(conf.learners)
    if cc.op == ConfOp.BOOTSTRAP:
        voters.update(m for m, _ in cc.members)
        addrs.update(dict(cc.members))
    elif cc.op == ConfOp.ADD_LEARNER:
        learners.add(cc.node_id)
        addrs[cc.node_id] = cc.addr
    elif cc.op == ConfOp.ADD_VOTER:
        voters.add(cc.node_id)
        addrs[cc.node_id] = cc.addr
    elif cc.op == ConfOp.PROMOTE:
        learners.discard(cc.node_id)
        voters.add(cc.node_id)
        if cc.addr:
            addrs[cc.node_id] = cc.addr
    else:
        voters.discard(cc.node_id)
        learners.discard(cc.node_id)
        addrs.pop(cc.node_id, None)
    return ConfState(frozenset(voters), frozenset(learners), tuple(sorted(addrs.items())))
