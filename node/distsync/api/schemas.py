"""Request bodies, checked with pydantic before anything reaches the log. Strict types: a
string where a number belongs is a 400, never a silent coercion."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ApiError

KEY_RE = re.compile(r"^[A-Za-z0-9._\-/:@]{1,512}$")
NODE_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$"
ADDR_RE = r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class KVPut(_Strict):
    value: Any
    expect_revision: int | None = Field(default=None, ge=0)
    expect_value: Any = None


class KVDelete(_Strict):
    expect_revision: int | None = Field(default=None, ge=0)


class MemberAdd(_Strict):
    id: str = Field(pattern=NODE_ID_RE)
    addr: str = Field(pattern=ADDR_RE)
    learner: bool = False


class TransferLeader(_Strict):
    to: str | None = Field(default=None, pattern=NODE_ID_RE)


class _OutOfRange(ValueError):
    """Valid JSON that cannot be stored: commands are msgpack-encoded (integers must fit in
    64 bits) and answers are JSON again (no NaN or infinity)."""


def _parse_int(text: str) -> int:
    n = int(text)
    if not -(1 << 63) <= n < (1 << 64):
        raise _OutOfRange(f"integer {text[:40]} does not fit in 64 bits")
    return n


def _parse_float(text: str) -> float:
    f = float(text)
    if not math.isfinite(f):
        raise _OutOfRange(f"number {text[:40]} is out of range")
    return f


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def check_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise ApiError(
            400, "invalid_key",
            "keys are 1-512 characters of A-Z a-z 0-9 . _ - / : @",
        )
    return key


async def parse_body(request: web.Request, model: type[BaseModel], optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return model()
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    try:
        obj = json.loads(
            raw, parse_int=_parse_int, parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except _OutOfRange as e:
        raise ApiError(400, "invalid_request", f"body cannot be stored: {e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    try:
        parsed = model.model_validate(obj)
    except ValidationError as e:
        details = [
            {"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
            for err in e.errors()
        ]
        raise ApiError(
            400, "invalid_request", "request body failed validation", details=details
        ) from None
    return parsed
