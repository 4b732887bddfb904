"""A small OAuth2 authorization server for the tests, on 127.0.0.1 in a thread.

It issues short-lived access tokens (3 s by default) and rotating refresh tokens: a refresh
token works once, and replaying a spent one is ``invalid_grant``, as strict providers do. It
serves the refresh-token, device-code (RFC 8628) and authorization-code with PKCE S256 grants,
token introspection (RFC 7662, for Dovecot's oauth2 passdb) and RFC 8414 metadata. Every secret
it hands out is kept in ``issued`` so a test can search logs for leaks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CLIENT_ID = "fetchd-test-client"
CLIENT_SECRET = "test-client-secret-7f3a"


@dataclass
class _Access:
    user: str
    expires_at: float
    active: bool = True


@dataclass
class _Device:
    user: str
    approved: bool = False
    last_poll: float = 0.0


@dataclass
class AuthorizationServer:
    """State and controls of the test AS; start it with ``running``."""

    user: str = "alice"
    access_lifetime: float = 3.0
    device_interval: int = 1
    base_url: str = ""
    access: dict[str, _Access] = field(default_factory=dict)
    refresh: dict[str, str] = field(default_factory=dict)  # live refresh token -> user
    spent_refresh: set[str] = field(default_factory=set)
    devices: dict[str, _Device] = field(default_factory=dict)
    codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # code -> user, chal, uri
    issued: list[str] = field(default_factory=lambda: [CLIENT_SECRET])
    grants: list[str] = field(default_factory=list)  # grant_type of each token request
    fail_next: list[int] = field(default_factory=list)  # HTTP statuses to answer next
    token_requests: list[tuple[float, int]] = field(default_factory=list)  # (when, status)
    token_delay: float = 0.0  # seconds each token request takes (to widen races)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- controls for tests --------------------------------------------------------------------
    def new_refresh_token(self, user: str | None = None) -> str:
        """A fresh refresh token for ``user`` (as if they had logged in)."""
        token = self._issue("rt")
        with self.lock:
            self.refresh[token] = user or self.user
        return token

    def revoke_access_tokens(self) -> None:
        """Make every access token inactive now (a server that rejects a token early)."""
        with self.lock:
            for entry in self.access.values():
                entry.active = False

    def revoke_refresh_tokens(self) -> None:
        """Spend every refresh token (the user revoked the app, or changed the password)."""
        with self.lock:
            self.spent_refresh.update(self.refresh)
            self.refresh.clear()

    def refresh_count(self) -> int:
        return self.grants.count("refresh_token")

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/token"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.base_url}/introspect"

    # -- the grants ----------------------------------------------------------------------------
    def _issue(self, prefix: str) -> str:
        token = f"{prefix}-{secrets.token_urlsafe(18)}"
        with self.lock:
            self.issued.append(token)
        return token

    def _tokens_for(self, user: str) -> dict[str, Any]:
        access = self._issue("at")
        refresh = self.new_refresh_token(user)
        with self.lock:
            self.access[access] = _Access(user, time.time() + self.access_lifetime)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_lifetime,
            "refresh_token": refresh,
            "scope": "mail",
        }

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        time.sleep(self.token_delay)
        if form.get("client_id", CLIENT_ID) != CLIENT_ID:
            return 401, {"error": "invalid_client"}
        if grant == "refresh_token":
            with self.lock:
                user = self.refresh.pop(form.get("refresh_token", ""), None)
                if user is None:
                    return 400, {"error": "invalid_grant", "error_description": "spent or revoked"}
                self.spent_refresh.add(form["refresh_token"])
            return 200, self._tokens_for(user)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            return self._device_token(form.get("device_code", ""))
        if grant == "authorization_code":
            with self.lock:
                found = self.codes.pop(form.get("code", ""), None)
            if found is None:
                return 400, {"error": "invalid_grant"}
            user, challenge, redirect_uri = found
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge:
                return 400, {"error": "invalid_grant", "error_description": "PKCE"}
            if form.get("redirect_uri") != redirect_uri:
                return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
            return 200, self._tokens_for(user)
        return 400, {"error": "unsupported_grant_type"}

    def _device_token(self, device_code: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            device = self.devices.get(device_code)
            if device is None:
                return 400, {"error": "expired_token"}
            now = time.time()
            too_soon = now - device.last_poll < self.device_interval
            device.last_poll = now
            if not device.approved:
                return 400, {"error": "slow_down" if too_soon else "authorization_pending"}
            del self.devices[device_code]
        return 200, self._tokens_for(device.user)

    def device_authorization(self) -> dict[str, Any]:
        device_code = self._issue("dc")
        user_code = secrets.token_hex(4).upper()
        with self.lock:
            self.devices[device_code] = _Device(self.user)
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": f"{self.base_url}/device",
            "expires_in": 60,
            "interval": self.device_interval,
        }

    def approve_devices(self) -> None:
        """The user typed the code in the browser and approved."""
        with self.lock:
            for device in self.devices.values():
                device.approved = True

    def authorize(self, query: dict[str, str]) -> str:
        """The browser step of the code flow: the redirect location it leads to."""
        code = self._issue("ac")
        with self.lock:
            self.codes[code] = (self.user, query["code_challenge"], query["redirect_uri"])
        return f"{query['redirect_uri']}?code={code}&state={query.get('state', '')}"

    def introspect(self, token: str) -> dict[str, Any]:
        with self.lock:
            entry = self.access.get(token)
            if entry is None or not entry.active or entry.expires_at < time.time():
                return {"active": False}
            return {"active": True, "username": entry.user, "exp": int(entry.expires_at)}

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.base_url,
            "token_endpoint": self.token_endpoint,
            "authorization_endpoint": f"{self.base_url}/authorize",
            "device_authorization_endpoint": f"{self.base_url}/device_authorization",
            "introspection_endpoint": self.introspection_endpoint,
            "code_challenge_methods_supported": ["S256"],
        }


def _handler(server: AuthorizationServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read the AS's state, not its log

        def _send(self, status: int, body: dict[str, Any], location: str = "") -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length", "0"))
            parsed = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
            return {key: values[0] for key, values in parsed.items()}

        def do_POST(self) -> None:
            form = self._form()
            path = urlsplit(self.path).path
            if server.fail_next:
                status = server.fail_next.pop(0)
                if path == "/token":
                    server.token_requests.append((time.monotonic(), status))
                self._send(status, {"error": "temporarily_unavailable"})
                return
            if path == "/token":
                status, body = server.token(form)
                server.token_requests.append((time.monotonic(), status))
                self._send(status, body)
            elif path == "/device_authorization":
                self._send(200, server.device_authorization())
            elif path == "/introspect":
                self._send(200, server.introspect(form.get("token", "")))
            else:
                self._send(404, {"error": "not_found"})

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(parts.query).items()}
            if parts.path == "/.well-known/oauth-authorization-server":
                self._send(200, server.metadata())
            elif parts.path == "/authorize":
                self._send(302, {}, location=server.authorize(query))
            elif parts.path == "/introspect":  # Dovecot's introspection_mode = get
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                self._send(200, server.introspect(token or query.get("token", "")))
            else:
                self._send(404, {"error": "not_found"})

    return Handler


@contextmanager
def running(**settings: Any) -> Iterator[AuthorizationServer]:
    """Start an AuthorizationServer on a free loopback port; stop it on exit."""
    state = AuthorizationServer(**settings)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="test-oauth2-as", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
