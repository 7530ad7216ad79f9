"""OpenAPI fragment for api/cluster.py: health, status, membership, leadership transfer."""

from __future__ import annotations

from ..schemas import NODE_ID_RE, MemberAdd, TransferLeader
from .common import (
    BOOL,
    INT,
    REQUEST_ID,
    STR,
    array,
    body,
    errors,
    nullable,
    obj,
    ok,
    path_param,
    ref,
)

OPENAPI_SCHEMAS = {
    "Member": obj(["id", "addr", "voter"], id=STR, addr=STR, voter=BOOL),
    "Members": obj(
        ["leader", "members"], leader=nullable(STR),
        members=array(ref("Member")),
    ),
    "Status": obj(
        ["id", "role", "term", "leader", "commit", "applied", "last_index", "voters",
         "learners", "members", "ready"],
        id=STR, role={"type": "string", "enum": ["follower", "pre_candidate", "candidate",
                                                 "leader"]},
        term=INT, leader=nullable(STR), leader_addr=nullable(STR), addr=STR, commit=INT,
        applied=INT, last_index=INT, snapshot_index=INT,
        voters=array(STR), learners=array(STR), members=array(ref("Member")),
        progress={"type": "object", "description": "Per follower (on the leader only)",
                  "additionalProperties": obj(["match", "next"], match=INT, next=INT,
                                              state=STR)},
        ready=BOOL,
        storage_fault={**nullable(ref("StorageFault")),
                       "description": "null, or the storage fault this node is recovering "
                                      "from (it does not vote until a leader repairs it)"},
        recovering_peers=array(STR),
        no_leader_reason=STR,
        start_refusals={**obj(["refusing", "refused_by"],
                              refusing={"type": "object", "additionalProperties": STR},
                              refused_by={"type": "object", "additionalProperties": STR}),
                        "description": "Peers whose streams this node refuses (their data "
                                       "directory does not continue a start of theirs it "
                                       "saw, or holds another cluster's id), and peers "
                                       "that refuse this node's without being believed "
                                       "(they are not the member it knew) or as another "
                                       "cluster's: each with why"},
        cluster_id={**nullable(STR),
                    "description": "The id this cluster's first leader gave it (hex), once "
                                   "this node has applied it; members with different ids "
                                   "refuse each other's streams"},
    ),
    "StorageFault": obj(
        ["kind", "detail", "since", "repaired_up_to"],
        kind={"type": "string", "enum": ["lost_tail", "corrupt_entry", "lost_snapshot",
                                         "lost_hard_state", "empty_after_use",
                                         "empty_data_dir", "rolled_back"]},
        detail=STR, since={"type": "string", "format": "date-time"},
        durable_index=INT, repaired_up_to=INT, repair_point=nullable(INT), discovering=BOOL,
    ),
}

# The errors of the routes that change the membership or the leader.
_MEMBER_ERRORS = errors(409, 503)

OPENAPI = {
    "/healthz": {"get": {
        "summary": "Liveness: the process and its event loop answer",
        "tags": ["cluster"],
        "responses": {"200": ok(obj(["ok", "id"], ok=BOOL, id=STR))},
    }},
    "/readyz": {"get": {
        "summary": "Readiness: a leader is known, this node is a member and has applied all "
                   "it knows to be committed",
        "tags": ["cluster"],
        "responses": {"200": ok(obj(["ready"], ready=BOOL, leader=nullable(STR))),
                      **errors(503)},
    }},
    "/metrics": {"get": {
        "summary": "Prometheus metrics (text exposition format)",
        "tags": ["cluster"],
        "responses": {"200": {"description": "Metrics",
                              "content": {"text/plain": {"schema": STR}}}},
    }},
    "/v1/status": {"get": {
        "summary": "This node's view of the cluster",
        "tags": ["cluster"],
        "responses": {"200": ok(ref("Status"))},
    }},
    "/v1/cluster/members": {
        "get": {
            "summary": "The membership as the leader knows it",
            "tags": ["cluster"],
            "responses": {"200": ok(ref("Members")), **errors(503)},
        },
        "post": {
            "summary": "Add a member: as a learner, then (unless `learner`) promote it once "
                       "it has caught up. Idempotent for the same id and address.",
            "tags": ["cluster"],
            "parameters": [REQUEST_ID],
            "requestBody": body(MemberAdd),
            "responses": {"200": ok(ref("Members")), **_MEMBER_ERRORS},
        },
    },
    "/v1/cluster/members/{id}": {"delete": {
        "summary": "Remove a member (removing the leader hands leadership over first)",
        "tags": ["cluster"],
        "parameters": [path_param("id", NODE_ID_RE), REQUEST_ID],
        "responses": {"200": ok(ref("Members")), **errors(400, 404), **_MEMBER_ERRORS},
    }},
    "/v1/cluster/transfer-leader": {"post": {
        "summary": "Hand leadership to `to` (default: the most up-to-date voter)",
        "tags": ["cluster"],
        "parameters": [REQUEST_ID],
        "requestBody": body(TransferLeader, required=False),
        "responses": {"200": ok(obj(["leader"], leader=STR)), **_MEMBER_ERRORS},
    }},
}
