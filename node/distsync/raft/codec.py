"""Binary encoding of Raft values for the wire and for disk (msgpack, positional arrays).

One codec for both uses keeps a snapshot or entry byte-identical wherever it travels.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    Snapshot,
    SnapshotMeta,
)


def conf_to_obj(c: ConfState) -> list[Any]:
    return [sorted(c.voters), sorted(c.learners), [list(a) for a in c.addrs]]


def conf_from_obj(o: list[Any]) -> ConfState:
    return ConfState(frozenset(o[0]), frozenset(o[1]), tuple((a, b) for a, b in o[2]))


def entry_to_obj(e: Entry) -> list[Any]:
    return [e.index, e.term, int(e.type), e.data]


def entry_from_obj(o: list[Any]) -> Entry:
    return Entry(o[0], o[1], EntryType(o[2]), o[3])


def snapshot_to_obj(s: Snapshot) -> list[Any]:
    o = [s.meta.index, s.meta.term, conf_to_obj(s.meta.conf), s.data]
    if s.meta.cluster_id:
        o.append(s.meta.cluster_id)  # a fifth element: nodes from before cluster ids skip it
    return o


def snapshot_from_obj(o: list[Any]) -> Snapshot:
    cid = o[4] if len(o) > 4 else b""
    return Snapshot(SnapshotMeta(o[0], o[1], conf_from_obj(o[2]), cid), o[3])


def message_to_obj(m: Message) -> list[Any]:
    return [
        int(m.type), m.src, m.dst, m.term, m.index, m.log_term,
        [entry_to_obj(e) for e in m.entries], m.commit, m.reject, m.reject_hint,
        snapshot_to_obj(m.snapshot) if m.snapshot is not None else None, m.context, m.seq,
        m.repair,
    ]


def message_from_obj(o: list[Any]) -> Message:
    return Message(
        type=MsgType(o[0]), src=o[1], dst=o[2], term=o[3], index=o[4], log_term=o[5],
        entries=[entry_from_obj(e) for e in o[6]], commit=o[7], reject=o[8],
        reject_hint=o[9], snapshot=snapshot_from_obj(o[10]) if o[10] is not None else None,
        context=o[11], seq=o[12] if len(o) > 12 else 0,  # absent from older nodes
        repair=o[13] if len(o) > 13 else 0,
    )


def encode_messages(msgs: list[Message]) -> bytes:
    """One frame holding a batch of messages."""
    return msgpack.packb([message_to_obj(m) for m in msgs], use_bin_type=True)


def decode_messages(data: bytes) -> list[Message]:
    return [message_from_obj(o) for o in msgpack.unpackb(data, raw=False)]


def encode_entry(e: Entry) -> bytes:
    return msgpack.packb(entry_to_obj(e), use_bin_type=True)


def decode_entry(data: bytes) -> Entry:
    return entry_from_obj(msgpack.unpackb(data, raw=False))


def encode_snapshot(s: Snapshot) -> bytes:
    return msgpack.packb(snapshot_to_obj(s), use_bin_type=True)


def decode_snapshot(data: bytes) -> Snapshot:
    return snapshot_from_obj(msgpack.unpackb(data, raw=False))


def encode_hard_state(h: HardState) -> bytes:
    # Later fields at their defaults are left out, so a healthy node's hard state keeps the
    # older format, which the versions before read.
    fields: list = [h.term, h.vote, h.commit, h.recovering,
                    list(h.finished) if h.finished is not None else None,
                    list(h.heard), h.heard_term]
    defaults: list = ["", None, [], 0]
    while len(fields) > 3 and fields[-1] == defaults[len(fields) - 4]:
        fields.pop()
    return msgpack.packb(fields, use_bin_type=True)


def decode_hard_state(data: bytes) -> HardState:
    t, v, c, *rest = msgpack.unpackb(data, raw=False)
    rest += [None] * (4 - len(rest))
    return HardState(t, v, c, rest[0] or "",
                     tuple(rest[1]) if rest[1] is not None else None,
                     tuple(rest[2] or ()), rest[3] or 0)
