"""Who may act: one shared token (pure).

Reading the dashboard needs nothing (it listens on loopback by default); approving,
rejecting and rolling back need the token, either as ``Authorization: Bearer <token>``
(scripts) or through the login form, which sets a cookie.  The cookie holds an HMAC of the
token, never the token itself.  Actions are POST only; a cookie-authenticated POST must also
carry the CSRF field every form gets, which another site cannot read (and the cookie is
``SameSite=Strict``), so a page elsewhere cannot make a logged-in browser act.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

COOKIE = "ion_dashboard_session"


@dataclass(frozen=True, slots=True)
class Auth:
    token: str | None

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def _mac(self, purpose: str) -> str:
        assert self.token
        return hmac.new(self.token.encode(), purpose.encode(), hashlib.sha256).hexdigest()

    def session_value(self) -> str:
        return self._mac("session")

    def csrf_value(self) -> str:
        return self._mac("csrf") if self.enabled else ""

    def check_token(self, given: str) -> bool:
        return self.enabled and hmac.compare_digest(given.encode(), str(self.token).encode())

    def bearer_ok(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        return self.check_token(authorization[len("Bearer ") :].strip())

    def logged_in(self, cookie: str | None) -> bool:
        return (
            self.enabled
            and cookie is not None
            and hmac.compare_digest(cookie.encode(), self.session_value().encode())
        )

    def may_act(self, *, authorization: str | None, cookie: str | None, csrf: str | None) -> bool:
        """A POST with the bearer token, or with the login cookie and the form's CSRF field."""
        if self.bearer_ok(authorization):
            return True
        return (
            self.logged_in(cookie)
            and csrf is not None
            and hmac.compare_digest(csrf.encode(), self.csrf_value().encode())
        )
