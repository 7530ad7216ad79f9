"""`distsync status` (local.format_status) shows a node recovering from a storage fault and
why a cluster has no leader, next to the usual table."""

from __future__ import annotations

from distsync.local import format_status


def _st(nid: str, **kw: object) -> dict:
    base = {"id": nid, "addr": f"{nid}:1", "role": "follower", "term": 3, "leader": None,
            "commit": 9, "applied": 9, "members": [{"id": nid, "voter": True}],
            "storage_fault": None}
    return {**base, **kw}


def test_status_table_shows_a_recovering_node_and_why_there_is_no_leader() -> None:
    fault = {"kind": "lost_tail", "detail": "the log ends at 7, the mark says 9",
             "since": "2026-12-04T18:00:00.000Z", "repaired_up_to": 7}
    out = format_status([
        _st("n1", storage_fault=fault),
        _st("n2", no_leader_reason="n1 refused to vote: recovering from a storage fault"),
    ])
    lines = out.splitlines()
    assert "STORAGE" in lines[0]
    assert "RECOVERING(lost_tail)" in lines[2] and " ok " in lines[3]
    assert "n1: storage fault lost_tail since 2026-12-04T18:00:00.000Z: the log ends at 7" in out
    assert "n2: no leader: n1 refused to vote" in out


def test_status_table_of_a_healthy_cluster_has_no_notes() -> None:
    out = format_status([_st("n1", leader="n1", role="leader")])
    assert len(out.splitlines()) == 3 and "RECOVERING" not in out


def test_status_table_names_the_cluster_id_once_or_each_when_they_differ() -> None:
    same = format_status([_st("n1", cluster_id="ab12"), _st("n2", cluster_id="ab12"),
                          _st("n3", cluster_id=None)])
    assert same.splitlines()[5:] == ["cluster id: ab12"], same
    two = format_status([_st("n1", cluster_id="ab12"), _st("n2", cluster_id="cd34")])
    assert two.splitlines()[4:] == ["n1: cluster id ab12", "n2: cluster id cd34"], two
