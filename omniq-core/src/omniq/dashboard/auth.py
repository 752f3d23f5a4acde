"""The dashboard's access token.

Every action that changes state needs the token; with ``protect_reads`` (a dashboard
bound beyond loopback) every page does too. The token is taken from an
``Authorization: Bearer`` header, the ``omniq_token`` cookie (set by ``/login`` or by
opening any page with ``?token=...``), or a form field ``token``. The cookie is
HttpOnly and SameSite=Strict, so another site cannot make a browser use it.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from starlette.requests import Request

COOKIE = "omniq_token"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.1``, ``::1``)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Access:
    """Checks requests against the configured token (None: no action is allowed)."""

    def __init__(self, token: str | None, protect_reads: bool = False) -> None:
        if protect_reads and not token:
            raise ValueError("protect_reads needs a token")
        self.token = token
        self.protect_reads = protect_reads

    def given(self, request: Request, form: Mapping[str, str] | None = None) -> str | None:
        """The token the request carries, if any."""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if form and form.get("token"):
            return form["token"]
        return request.cookies.get(COOKIE) or request.query_params.get("token")

    def matches(self, given: str | None) -> bool:
        """True when ``given`` is the token (compared in constant time)."""
        if self.token is None or given is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def allows(self, request: Request, form: Mapping[str, str] | None = None) -> bool:
        """True when the request carries the right token."""
        return self.matches(self.given(request, form))

    def may_read(self, request: Request) -> bool:
        """True when the request may see pages."""
        return not self.protect_reads or self.allows(request)
