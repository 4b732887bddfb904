"""Logging in once: the device grant (RFC 8628) or the authorization code with PKCE S256 and a
loopback redirect (RFC 7636, RFC 8252), ending in a token-store record.

Authlib supplies the PKCE challenge, the authorization URL and the token request bodies; the
waiting (device polling, the loopback listener, a pasted redirect URL) is ours.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from fetchd.auth.oauth2.endpoint import Client, TokenEndpointError, token_request
from fetchd.auth.oauth2.http import check_endpoint
from fetchd.auth.oauth2.provider import Provider
from fetchd.auth.oauth2.refresh import expires_in
from fetchd.auth.oauth2.secret import Secret
from fetchd.auth.oauth2.store import TokenRecord
from fetchd.errors import AuthError, ConfigError, OAuth2UnavailableError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_STEP = 5  # seconds added to the interval on slow_down (RFC 8628 section 3.5)
BROWSER_WAIT = 600.0  # seconds to wait for the browser step or a pasted URL


@dataclass(frozen=True)
class LoginRequest:
    """What ``fetchd --oauth2-login`` was asked to do."""

    account: str  # user@pollname, for messages
    server: str  # the poll name: the record's key with ``user``
    user: str
    provider: Provider
    client: Client
    flow: str  # "device", "browser" or "" (device when the provider has a device endpoint)
    timeout: float


def log_in(
    request: LoginRequest,
    *,
    out: TextIO = sys.stdout,
    stdin: TextIO = sys.stdin,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> TokenRecord:
    """Run the flow and return the record to save (the caller saves it); ``sleep`` and
    ``clock`` pace the device flow's polling."""
    flow = request.flow or ("device" if request.provider.device_endpoint else "browser")
    if flow == "device":
        token = _device_flow(request, out, sleep, clock)
    else:
        token = _browser_flow(request, out, stdin)
    refresh = token.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise AuthError(
            f"{request.account}: the provider issued no refresh token"
            " (does the scope include offline_access?)"
        )
    access = token.get("access_token")
    return TokenRecord(
        server=request.server,
        user=request.user,
        provider=request.provider.name,
        token_endpoint=request.provider.token_endpoint,
        client_id=request.client.client_id,
        client_secret=request.client.client_secret,
        scope=request.provider.scope,
        refresh_token=Secret(refresh),
        access_token=Secret(access) if isinstance(access, str) and access else None,
        expires_at=time.time() + expires_in(token) if isinstance(access, str) else 0.0,
    )


def _device_flow(
    request: LoginRequest,
    out: TextIO,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> dict[str, Any]:
    endpoint = request.provider.device_endpoint
    if endpoint is None:
        raise ConfigError(
            f"{request.provider.name} has no device authorization endpoint;"
            " use --oauth2-flow browser"
        )
    fields = {**request.client.form(), "scope": request.provider.scope}
    try:
        response = httpx.post(
            check_endpoint(endpoint), data=fields, timeout=request.timeout, trust_env=False
        )
        grant = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise OAuth2UnavailableError(
            f"{request.account}: device authorization failed ({type(exc).__name__})"
        ) from None
    if response.status_code != 200 or not isinstance(grant, dict) or "device_code" not in grant:
        error = grant.get("error") if isinstance(grant, dict) else None
        raise AuthError(f"{request.account}: device authorization refused ({error})")
    uri = grant.get("verification_uri") or grant.get("verification_url")
    print(f"To log in {request.account}, open {uri}", file=out)
    print(f"and enter the code {grant.get('user_code')}", file=out, flush=True)
    interval = float(grant.get("interval") or 5)
    deadline = clock() + float(grant.get("expires_in") or 900)
    while clock() < deadline:
        sleep(interval)
        try:
            return token_request(
                request.provider.token_endpoint,
                DEVICE_GRANT,
                request.client,
                account=request.account,
                timeout=request.timeout,
                device_code=str(grant["device_code"]),
            )
        except TokenEndpointError as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += SLOW_DOWN_STEP
                continue
            raise AuthError(f"{request.account}: device login failed ({exc.error})") from None
    raise AuthError(f"{request.account}: the device code expired before the login was approved")


def _browser_flow(request: LoginRequest, out: TextIO, stdin: TextIO) -> dict[str, Any]:
    endpoint = request.provider.authorization_endpoint
    if endpoint is None:
        raise ConfigError(f"{request.provider.name} has no authorization endpoint")
    verifier = generate_token(64)
    state = generate_token(24)
    redirects: queue.Queue[str] = queue.Queue()
    listener = _Listener(redirects)
    redirect_uri = f"http://127.0.0.1:{listener.port}/"
    url = prepare_grant_uri(
        check_endpoint(endpoint),
        client_id=request.client.client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=request.provider.scope,
        state=state,
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
    )
    print(f"To log in {request.account}, open this URL in a browser:\n{url}", file=out)
    if _open_browser(url):
        print("(opened in your desktop's browser)", file=out)
    print(
        "On a machine without a browser, open it elsewhere and paste the address"
        " the browser ends on (it starts with http://127.0.0.1) here:",
        file=out,
        flush=True,
    )
    threading.Thread(target=_read_pasted, args=(stdin, redirects), daemon=True).start()
    try:
        try:
            landed = redirects.get(timeout=BROWSER_WAIT)
        except queue.Empty:
            raise AuthError(f"{request.account}: no login within {BROWSER_WAIT:.0f} s") from None
    finally:
        listener.close()
    query = {key: values[0] for key, values in parse_qs(urlsplit(landed).query).items()}
    if query.get("state") != state:
        raise AuthError(f"{request.account}: the redirect does not belong to this login (state)")
    if "code" not in query:
        raise AuthError(f"{request.account}: login refused ({query.get('error', 'no code')})")
    try:
        return token_request(
            request.provider.token_endpoint,
            "authorization_code",
            request.client,
            account=request.account,
            timeout=request.timeout,
            code=query["code"],
            redirect_uri=redirect_uri,
            code_verifier=verifier,
        )
    except TokenEndpointError as exc:
        raise AuthError(f"{request.account}: code exchange refused ({exc.error})") from None


def _open_browser(url: str) -> bool:
    """Hand the URL to the desktop's browser when there is a desktop: a graphical session and
    xdg-open. Never a console browser, which would take over the terminal that the user may
    paste into; the URL carries no secret (PKCE sends only the challenge)."""
    opener = shutil.which("xdg-open")
    if opener is None or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        subprocess.Popen(
            [opener, url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return False
    return True


def _read_pasted(stdin: TextIO, redirects: queue.Queue[str]) -> None:
    for line in stdin:
        if line.strip().startswith("http"):
            redirects.put(line.strip())
            return


class _Listener:
    """The RFC 8252 loopback redirect target: 127.0.0.1 on a free port, one request wanted."""

    def __init__(self, redirects: queue.Queue[str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request line holds the authorization code: never log it

            def do_GET(self) -> None:
                if "code=" not in self.path and "error=" not in self.path:
                    self.send_error(404)
                    return
                redirects.put(f"http://127.0.0.1{self.path}")
                body = b"fetchd: login received; you can close this window.\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
