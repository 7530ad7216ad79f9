"""What a recovering node knows about its own repair (protocol-aware recovery, after
Alagappan et al., "Protocol-Aware Recovery for Consensus-Based Storage", FAST 2018).

A node whose disk lost or damaged what it had made durable (a cut or corrupt log, a lost
snapshot or hard state, an empty data directory that may be a replaced disk) must not act on
what it no longer has: it does not vote, campaign, or count towards a commit. It keeps
following a leader and taking its entries, like a learner, and is repaired when:

* a leader of its current term sent it a *repair point*: an entry of that leader's term,
  appended after the leader learnt of the fault;
* that entry is committed, which happened without this node (its acknowledgements do not
  count while it recovers), so a majority of intact nodes accepted the leader's term after
  the fault: that term is at least any term in which this node's lost vote helped elect a
  leader, and the leader's log holds every entry committed before, the lost ones included;
* and this node holds the leader's log up to that entry, durably.

It then takes the leader as its vote in that term (it may have voted in it before the fault),
so it can never vote twice in a term, and its log again holds everything committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Recovery:
    kind: str
    detail: str
    # The highest index the store had made durable, when it knows (0: unknown).
    durable_index: int = 0
    # An empty data directory still asking its founding peers whether the cluster is new.
    discovering: bool = False
    # Found the cluster new, and telling the founding peers so before voting (`acked`: those
    # that keep it on their disks now).
    announcing: bool = False
    acked: set[str] = field(default_factory=set)
    # Founding peers that answered a probe with a log holding only the founding entries.
    fresh: set[str] = field(default_factory=set)
    # Founding peers that answered that they cannot say (they recover themselves).
    unsure: set[str] = field(default_factory=set)
    # The highest term those peers answered from: a peer past the founding term campaigned,
    # so we (before a disk replacement) may have voted in any term up to this one.
    seen_term: int = 0
    # The repair point the leader of `repair_term` sent (0: none yet).
    repair_term: int = 0
    repair_point: int = 0
