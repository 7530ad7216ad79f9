"""OpenAPI fragment for api/ui.py: the operator console's static files."""

from __future__ import annotations

from .common import STR

_HTML = {"description": "The console page",
         "content": {"text/html": {"schema": STR}}}
OPENAPI = {
    "/ui": {"get": {"summary": "Redirects to /ui/", "tags": ["console"],
                    "responses": {"302": {"description": "To /ui/"}}}},
    "/ui/": {"get": {"summary": "The operator console (open: holds no data; it reads the "
                               "API with the token the operator enters)",
                     "tags": ["console"], "responses": {"200": _HTML}}},
    "/ui/{name}": {"get": {
        "summary": "The console's stylesheet and scripts",
        "tags": ["console"],
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "A static file",
                              "content": {"text/javascript": {"schema": STR},
                                          "text/css": {"schema": STR}}}},
    }},
}
