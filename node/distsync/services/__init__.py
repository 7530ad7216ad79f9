"""Replicated services: deterministic state machines applied from the Raft log. Which of
them a node runs, and how each is wired, is decided by the composition root
(server.py, `node_services`)."""
