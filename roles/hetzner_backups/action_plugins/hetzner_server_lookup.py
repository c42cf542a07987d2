"""hetzner_server_lookup: look a server up by name in the Hetzner Cloud API, on the controller, in-process.

The role's read on every run (issue 18: a rerun in few round trips). An action plugin runs inside
ansible's own worker: one HTTP GET, no module shipped and started in a new Python, which took 0.6 s of
a rerun with hetzner.hcloud.server_info (its import of the hcloud library) against 0.03 s here. The
switch itself, rare, stays hetzner.hcloud.server.

The result has server_info's shape where the role reads it: hcloud_server_info, a list of the servers
with that name (id, name, status, backup_window); and on a failure msg and failure.code, the API's error
code (unauthorized, unavailable, ...) or the HTTP status where the answer had no JSON error, so the
role's retries and messages classify it by code. The token is sent as a bearer header only: it is never
part of a message or of the result.

Arguments: name, api_token, api_endpoint (as hetzner.hcloud.server_info), timeout (seconds, 30).
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ansible.plugins.action import ActionBase

SERVER_KEYS = ("id", "name", "status", "backup_window")


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """The API never redirects: a 3xx is an answer of its own (an HTTPError), never followed, so the token
    is never sent on to another host (urllib would copy the Authorization header there)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirects)
MAX_ANSWER = 8 << 20  # bytes: a project's servers are a few KiB; more is not the API


def read_whole(answer: Any, deadline: float) -> bytes:
    """The answer's body by the deadline and within MAX_ANSWER: a server that sends a byte now and then
    would keep a plain read() going for good (the socket timeout is per read)."""
    chunks, size = [], 0
    while chunk := answer.read1(65536):
        size += len(chunk)
        if size > MAX_ANSWER:
            raise ValueError(f"the answer is over {MAX_ANSWER >> 20} MiB")
        if time.monotonic() > deadline:
            raise TimeoutError("the answer timed out")
        chunks.append(chunk)
    return b"".join(chunks)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True  # it only reads
    _requires_connection = False  # the controller talks to the API; the host is not contacted

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = self._lookup(super().run(tmp, task_vars))
        token = str(self._task.args.get("api_token") or "")
        if token and token in str(result.get("msg", "")):  # an answer that echoes the request's header back
            result["msg"] = str(result["msg"]).replace(token, "********")
        return result

    def _lookup(self, result: dict[str, Any]) -> dict[str, Any]:
        args = self._task.args
        name, token = str(args.get("name") or ""), str(args.get("api_token") or "")
        endpoint = str(args.get("api_endpoint") or "https://api.hetzner.cloud/v1").rstrip("/")
        if not name or not token:
            return {**result, "failed": True, "msg": "hetzner_server_lookup needs name and api_token"}
        if urllib.parse.urlsplit(endpoint).scheme not in ("https", "http"):
            return {
                **result,
                "failed": True,
                "msg": f"hetzner_backups_api_endpoint {endpoint!r}: expected an http(s) URL (https://api.hetzner.cloud/v1)",
            }
        url = f"{endpoint}/servers?{urllib.parse.urlencode({'name': name})}"
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 (http or https, above)
        request.add_unredirected_header("Authorization", f"Bearer {token}")
        try:
            timeout = float(args.get("timeout", 30))
            with OPENER.open(request, timeout=timeout) as answer:
                doc = json.loads(read_whole(answer, time.monotonic() + timeout).decode("utf-8"))
        except urllib.error.HTTPError as exc:
            code, message = str(exc.code), exc.reason
            try:
                error = json.loads(exc.read(MAX_ANSWER).decode("utf-8")).get("error") or {}
                code, message = str(error.get("code") or code), str(error.get("message") or message)
            except (ValueError, AttributeError, OSError):
                pass  # a proxy's HTML page: the HTTP status is the code
            return {**result, "failed": True, "failure": {"code": code}, "msg": f"GET {url}: {exc.code} {code}: {message}"}
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # No (whole) answer: refused, reset, timed out, DNS, TLS, a cut-off body. The role retries what
            # starts with "no answer from the API" (_hetzner_backups_transport_errors), as hcloud's own
            # "Max retries" before; the role's message names the endpoint.
            reason = getattr(exc, "reason", None) or exc
            return {**result, "failed": True, "msg": f"no answer from the API: {type(exc).__name__}: {reason}"}
        except ValueError as exc:  # not UTF-8, not JSON, too big
            return {**result, "failed": True, "msg": f"GET {url}: the answer is not the API's JSON ({exc})"}
        servers = doc.get("servers") if isinstance(doc, dict) else None
        if not isinstance(servers, list):
            return {**result, "failed": True, "msg": f"GET {url}: the answer has no servers list"}
        return {
            **result,
            "changed": False,
            "hcloud_server_info": [{k: s.get(k) for k in SERVER_KEYS} for s in servers if isinstance(s, dict)],
        }
