"""OpenAPI fragment for api/queues.py: queues, messages (enqueue, dequeue, ack, nack) and
consumers. Request bodies come from the handlers' pydantic models."""

from __future__ import annotations

from ..queues import (
    CONSUMER_RE,
    QUEUE_RE,
    AckBody,
    DequeueBody,
    EnqueueBody,
    NackBody,
    QueueOptions,
)
from .common import (
    BOOL,
    CONSISTENCY,
    INT,
    OBJECT,
    REQUEST_ID,
    STR,
    array,
    body,
    errors,
    limit_param,
    obj,
    ok,
    path_param,
    ref,
)

QUEUE = path_param("q", QUEUE_RE.pattern,
                   "1-124 characters of A-Z a-z 0-9 _ . - (not starting with . or -)")
CONSUMER = path_param("c", CONSUMER_RE, "1-128 characters of A-Z a-z 0-9 _ . : @ -")
_ARRAY = array()

OPENAPI_SCHEMAS = {
    "QueueSummary": obj(["name"], name=STR, messages=INT, ready=INT, in_flight=INT,
                        delayed=INT, consumers=INT),
    "Delivery": obj(["messages"], messages=array(OBJECT), partitions=_ARRAY),
}

# 404: no such queue or receipt; 409: an immutable option; 429: the queue is full.
_WRITE_ERRORS = errors(404, 409, 429, 503)

OPENAPI = {
    "/v1/queues": {"get": {
        "summary": "All queues",
        "tags": ["queues"],
        "parameters": [CONSISTENCY],
        "responses": {"200": ok(obj(["queues"], queues=array(ref("QueueSummary")))),
                      **errors(400, 503)},
    }},
    "/v1/queues/{q}": {
        "get": {
            "summary": "A queue: options, counts, partitions, consumers",
            "tags": ["queues"],
            "parameters": [QUEUE, CONSISTENCY],
            "responses": {"200": ok(obj(["name"], name=STR, options=OBJECT)),
                          **errors(400, 404, 503)},
        },
        "put": {
            "summary": "Create a queue, or change an existing one's options (idempotent)",
            "tags": ["queues"],
            "parameters": [QUEUE, REQUEST_ID],
            "requestBody": body(QueueOptions, required=False),
            "responses": {"200": ok(obj(["created", "name", "options"], created=BOOL,
                                        name=STR, options=OBJECT)),
                          **_WRITE_ERRORS},
        },
        "delete": {
            "summary": "Delete a queue and its messages",
            "tags": ["queues"],
            "parameters": [QUEUE, REQUEST_ID],
            "responses": {"200": ok(OBJECT), **errors(400), **_WRITE_ERRORS},
        },
    },
    "/v1/queues/{q}/messages": {
        "post": {
            "summary": "Enqueue one message or a batch (all or nothing); a client `id` makes "
                       "it idempotent within the dedupe window",
            "tags": ["queues"],
            "parameters": [QUEUE, REQUEST_ID],
            "requestBody": body(EnqueueBody),
            "responses": {"200": ok(obj(id=STR, duplicate=BOOL, ids=_ARRAY,
                                        duplicates=_ARRAY)),
                          **_WRITE_ERRORS},
        },
        "get": {
            "summary": "Peek: the oldest `limit` messages (by sequence) in any state, without "
                       "leasing them or counting a delivery; no receipts",
            "tags": ["queues"],
            "parameters": [QUEUE, CONSISTENCY, limit_param(100, 10)],
            "responses": {"200": ok(obj(
                ["queue", "messages", "total"], queue=STR, total=INT,
                messages=array(obj(["id", "state", "body", "partition", "seq", "deliveries"],
                                   id=STR, state=STR, body={}, partition=INT, seq=INT,
                                   deliveries=INT, enqueued_at=INT, key=STR, headers=OBJECT,
                                   error=STR, dead_letter=OBJECT)),
            )), **errors(400, 404, 503)},
        },
    },
    "/v1/queues/{q}/dequeue": {"post": {
        "summary": "Lease up to `max` messages for `visibility_ms`, waiting up to `wait_ms`",
        "tags": ["queues"],
        "parameters": [QUEUE, REQUEST_ID],
        "requestBody": body(DequeueBody),
        "responses": {"200": ok(ref("Delivery")), **_WRITE_ERRORS},
    }},
    "/v1/queues/{q}/ack": {"post": {
        "summary": "Acknowledge (delete) delivered messages by receipt",
        "tags": ["queues"],
        "parameters": [QUEUE, REQUEST_ID],
        "requestBody": body(AckBody),
        "responses": {"200": ok(obj(["acked"], acked=INT, unknown=_ARRAY)), **_WRITE_ERRORS},
    }},
    "/v1/queues/{q}/nack": {"post": {
        "summary": "Give delivered messages back (after `delay_ms`), or dead-letter them "
                   "past `max_deliveries`",
        "tags": ["queues"],
        "parameters": [QUEUE, REQUEST_ID],
        "requestBody": body(NackBody),
        "responses": {"200": ok(obj(["nacked"], nacked=INT, dead_lettered=INT,
                                    unknown=_ARRAY)),
                      **_WRITE_ERRORS},
    }},
    "/v1/queues/{q}/consumers/{c}/heartbeat": {"post": {
        "summary": "Register or keep alive a consumer without dequeuing",
        "tags": ["queues"],
        "parameters": [QUEUE, CONSUMER, REQUEST_ID],
        "responses": {"200": ok(OBJECT), **errors(400), **_WRITE_ERRORS},
    }},
    "/v1/queues/{q}/consumers/{c}": {"delete": {
        "summary": "Unregister a consumer: its messages in flight go back at once",
        "tags": ["queues"],
        "parameters": [QUEUE, CONSUMER, REQUEST_ID],
        "responses": {"200": ok(OBJECT), **errors(400), **_WRITE_ERRORS},
    }},
}
