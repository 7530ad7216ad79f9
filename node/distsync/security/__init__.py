"""Security in one place: the node's security options (`options`), TLS contexts (`tls`) and
the peers' HMAC handshake (`peer_auth`). Client roles are checked by the API's middleware
(`api/auth.py`), which uses these."""
