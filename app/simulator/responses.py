"""Bodies the simulated API answers with, the honest ones and the lying ones."""

from __future__ import annotations

import functools
import json
from http import HTTPStatus
from typing import Any

JSON = "application/json"
HTML = "text/html; charset=UTF-8"


def dumps(value: Any) -> bytes:
    """Compact JSON bytes, as the API sends them."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def envelope_error(message: str) -> bytes:
    """The API's error envelope."""
    return dumps({"status": "error", "message": message, "data": []})


def success(data: Any) -> bytes:
    """The API's success envelope."""
    return dumps({"status": "success", "message": "Success", "data": data})


INVALID_CREDENTIALS = envelope_error("Invalid Credentials")
TOO_MANY_REQUESTS = envelope_error("Too Many Requests")
ENVELOPE_ERROR = envelope_error("Something went wrong. Please try again later.")
# A bad token breaks the envelope, in two different ways.
WRONG_SEGMENTS = dumps({"message": "Wrong number of segments", "status_code": 401})
UNAUTHENTICATED = dumps({"error": "Unauthenticated."})
NOT_FOUND = dumps({"message": "Not Found"})
METHOD_NOT_ALLOWED = dumps({"message": "The GET method is not supported for this route. "
                                       "Supported methods: POST."})
# What a PHP fatal error in the middle of rendering looks like to a JSON client.
MALFORMED_JSON = (b'{"status":"success","message":"Success","data":{"page":1,"limit":100,'
                  b'"count":<br />\n<b>Fatal error</b>:  Allowed memory size of 134217728 bytes '
                  b"exhausted in <b>/var/www/app/Http/Controllers/ConversionController.php</b>")


def proxy_error_page(status: int) -> bytes:
    """An HTML error page like the one a proxy in front of the API sends."""
    title = f"{status} {HTTPStatus(status).phrase}"
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            f"</body>\r\n</html>\r\n").encode()


@functools.cache
def huge_error_page(size: int = 5 * 1024 * 1024) -> bytes:
    """A ~5 MB HTML error page (a stack trace rendered by a debug error handler)."""
    head = b"<!DOCTYPE html><html><head><title>Server Error</title></head><body><pre>\n"
    tail = b"</pre></body></html>\n"
    frame = (b"#42 /var/www/vendor/laravel/framework/src/Illuminate/Pipeline/Pipeline.php(167): "
             b"Illuminate\\Pipeline\\Pipeline->Illuminate\\Pipeline\\{closure}(Object(Request))\n")
    repeats = max(1, (size - len(head) - len(tail)) // len(frame))
    return head + frame * repeats + tail
