"""A fake Hetzner Cloud API on 127.0.0.1, shaped like the real one (see REFERENCE.md).

Endpoints (under /v1, Bearer token required):
  GET  /servers?name=NAME              {"servers": [...], "meta": {"pagination": {...}}}
  GET  /servers/{id}                   {"server": {...}}
  POST /servers/{id}/actions/enable_backup    201 {"action": {...}}
  POST /servers/{id}/actions/disable_backup   201 {"action": {...}}
  GET  /actions/{id}                   {"action": {...}}: "running" on the first poll, then "success"
Errors use {"error": {"code", "message", "details"}}: 401 unauthorized, 404 not_found, 422 invalid_input.

Test control (no token), under /__fake:
  GET  /__fake/state                   servers, write calls, requests seen
  POST /__fake/faults {"status": 429, "count": 2}   the next N API requests answer that error
  POST /__fake/servers {"name": "...", "backup_window": null}   add a server

Run: python3 tests/fake_hetzner/server.py --port 0 --token T --server NAME [--state-file F]
It prints "listening on http://127.0.0.1:PORT/v1" once ready.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

ERRORS = {
    401: ("unauthorized", "unable to authenticate"),
    403: ("forbidden", "insufficient permissions for this request"),
    404: ("not_found", "server not found"),
    409: ("conflict", "the resource is locked by another action"),
    422: ("invalid_input", "invalid input in field 'id'"),
    429: ("rate_limit_exceeded", "limit of 3600 requests per hour reached"),
    500: ("server_error", "internal server error"),
    503: ("unavailable", "service temporarily unavailable"),
}
WINDOW = "22-02"
CREATED = "2026-04-22T19:15:00+00:00"


def server_doc(sid: int, name: str, backup_window: str | None) -> dict[str, Any]:
    location = {
        "id": 1,
        "name": "fsn1",
        "description": "Falkenstein DC Park 1",
        "country": "DE",
        "city": "Falkenstein",
        "latitude": 50.47612,
        "longitude": 12.370071,
        "network_zone": "eu-central",
    }
    return {
        "id": sid,
        "name": name,
        "status": "running",
        "created": CREATED,
        "public_net": {
            "ipv4": {"id": 1000 + sid, "ip": f"203.0.113.{sid % 250 + 1}", "blocked": False, "dns_ptr": f"{name}.example"},
            "ipv6": {"id": 2000 + sid, "ip": "2001:db8::/64", "blocked": False, "dns_ptr": []},
            "floating_ips": [],
            "firewalls": [],
        },
        "private_net": [],
        "server_type": {
            "id": 22,
            "name": "cx22",
            "description": "CX22",
            "cores": 2,
            "memory": 4.0,
            "disk": 40,
            "storage_type": "local",
            "cpu_type": "shared",
            "architecture": "x86",
            "prices": [],
        },
        "datacenter": {
            "id": 4,
            "name": "fsn1-dc14",
            "description": "Falkenstein 1 DC14",
            "location": location,
            "server_types": {"supported": [22], "available": [22], "available_for_migration": [22]},
        },
        "image": {
            "id": 161547269,
            "type": "system",
            "status": "available",
            "name": "ubuntu-24.04",
            "description": "Ubuntu 24.04",
            "os_flavor": "ubuntu",
            "os_version": "24.04",
            "rapid_deploy": True,
            "architecture": "x86",
            "labels": {},
            "protection": {"delete": False},
        },
        "iso": None,
        "rescue_enabled": False,
        "locked": False,
        "backup_window": backup_window,
        "outgoing_traffic": 0,
        "ingoing_traffic": 0,
        "included_traffic": 21990232555520,
        "protection": {"delete": False, "rebuild": False},
        "labels": {"role": "neo-vps"},
        "volumes": [],
        "load_balancers": [],
        "primary_disk_size": 40,
        "placement_group": None,
    }


class State:
    def __init__(self, token: str, state_file: Path | None = None) -> None:
        self.token = token
        self.state_file = state_file
        self.lock = threading.Lock()
        self.servers: dict[int, dict[str, Any]] = {}
        self.firewalls: dict[int, dict[str, Any]] = {}
        self.actions: dict[int, dict[str, Any]] = {}
        self.polls: dict[int, int] = {}
        self.writes: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.faults: list[int] = []
        self.next_id = 42
        if state_file and state_file.exists():
            saved = json.loads(state_file.read_text())
            for s in saved.get("servers", []):
                self.servers[s["id"]] = server_doc(s["id"], s["name"], s["backup_window"])
                self.next_id = max(self.next_id, s["id"] + 1)

    def save(self) -> None:
        if self.state_file:
            doc = {"servers": [{"id": s["id"], "name": s["name"], "backup_window": s["backup_window"]} for s in self.servers.values()]}
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            tmp.replace(self.state_file)

    def add_server(self, name: str, backup_window: str | None = None) -> dict[str, Any]:
        for s in self.servers.values():
            if s["name"] == name:
                return s
        sid = self.next_id
        self.next_id += 1
        self.servers[sid] = server_doc(sid, name, backup_window)
        self.save()
        return self.servers[sid]


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-hcloud/1.0"
    state: State  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read /__fake/state instead
        return

    # ---- plumbing ----
    def _send(self, status: int, body: dict[str, Any] | None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str | None = None, details: dict[str, Any] | None = None) -> None:
        code, default = ERRORS[status]
        self._send(status, {"error": {"code": code, "message": message or default, "details": details or {}}})

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else {}

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.state.token}"

    def _api(self, method: str) -> None:
        url = urlparse(self.path)
        st = self.state
        with st.lock:
            st.requests.append(f"{method} {url.path}")
            if st.faults:
                status = st.faults.pop(0)
                self._error(status)
                return
        if not self._authorized():
            self._error(401)
            return
        path = url.path.removeprefix("/v1")
        with st.lock:
            if method == "GET" and path == "/servers":
                query = parse_qs(url.query)
                name = query.get("name", [None])[0]
                found = [s for s in st.servers.values() if name is None or s["name"] == name]
                pagination = {
                    "page": 1,
                    "per_page": 25,
                    "previous_page": None,
                    "next_page": None,
                    "last_page": 1,
                    "total_entries": len(found),
                }
                self._send(200, {"servers": found, "meta": {"pagination": pagination}})
                return
            m = re.fullmatch(r"/servers/([^/]+)(/actions/(enable_backup|disable_backup))?", path)
            if m:
                if not m[1].isdigit():
                    self._error(422, details={"fields": [{"name": "id", "messages": ["invalid id"]}]})
                    return
                server = st.servers.get(int(m[1]))
                if server is None:
                    self._error(404)
                    return
                if method == "GET" and not m[2]:
                    self._send(200, {"server": server})
                    return
                if method == "POST" and m[3]:
                    self._body()
                    st.writes.append({"command": m[3], "server": server["name"]})
                    server["backup_window"] = WINDOW if m[3] == "enable_backup" else None
                    st.save()
                    action = {
                        "id": 9000 + len(st.actions),
                        "command": m[3],
                        "status": "running",
                        "progress": 0,
                        "started": "2026-11-22T10:00:00+00:00",
                        "finished": None,
                        "resources": [{"id": server["id"], "type": "server"}],
                        "error": None,
                    }
                    st.actions[action["id"]] = action
                    self._send(201, {"action": action})
                    return
            if path == "/firewalls" or path.startswith("/firewalls/"):
                self._firewalls(method, path, url.query)
                return
            m = re.fullmatch(r"/actions/(\d+)", path)
            if m and method == "GET":
                action = st.actions.get(int(m[1]))
                if action is None:
                    self._error(404, "action not found")
                    return
                st.polls[action["id"]] = st.polls.get(action["id"], 0) + 1
                if st.polls[action["id"]] >= 2:
                    action.update(status="success", progress=100, finished="2026-11-22T10:00:05+00:00")
                self._send(200, {"action": action})
                return
        self._error(404, f"no route for {method} {url.path}")

    def _action(self, command: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
        """A running action, finished on its second poll (as the real API's take a moment)."""
        st = self.state
        action = {
            "id": 9000 + len(st.actions),
            "command": command,
            "status": "running",
            "progress": 0,
            "started": "2026-11-22T10:00:00+00:00",
            "finished": None,
            "resources": resources,
            "error": None,
        }
        st.actions[action["id"]] = action
        return action

    @staticmethod
    def _rule(rule: dict[str, Any]) -> dict[str, Any]:
        """A rule as the API returns it: every key present, absent ones null or empty."""
        return {
            "direction": rule["direction"],
            "protocol": rule["protocol"],
            "port": rule.get("port"),
            "source_ips": list(rule.get("source_ips") or []),
            "destination_ips": list(rule.get("destination_ips") or []),
            "description": rule.get("description"),
        }

    def _firewalls(self, method: str, path: str, query: str) -> None:
        """/firewalls: list by name, create, read, update (name, labels), set_rules, apply_to_resources (servers). Called under the lock."""
        st = self.state
        if path == "/firewalls" and method == "GET":
            name = parse_qs(query).get("name", [None])[0]
            found = [f for f in st.firewalls.values() if name is None or f["name"] == name]
            pagination = {"page": 1, "per_page": 25, "previous_page": None, "next_page": None, "last_page": 1, "total_entries": len(found)}
            self._send(200, {"firewalls": found, "meta": {"pagination": pagination}})
            return
        if path == "/firewalls" and method == "POST":
            body = self._body()
            if any(f["name"] == body.get("name") for f in st.firewalls.values()):
                self._error(409, "firewall name is already used")
                return
            fid, st.next_id = st.next_id, st.next_id + 1
            firewall = {
                "id": fid,
                "name": body["name"],
                "labels": body.get("labels") or {},
                "created": CREATED,
                "rules": [self._rule(r) for r in body.get("rules") or []],
                "applied_to": [],
            }
            st.firewalls[fid] = firewall
            st.writes.append({"command": "create_firewall", "firewall": firewall["name"], "rules": firewall["rules"]})
            st.save()
            self._send(201, {"firewall": firewall, "actions": []})
            return
        m = re.fullmatch(r"/firewalls/(\d+)(/actions/(set_rules|apply_to_resources))?", path)
        firewall = st.firewalls.get(int(m[1])) if m else None
        if m is None or firewall is None:
            self._error(404, "firewall not found")
            return
        if method == "GET" and not m[2]:
            self._send(200, {"firewall": firewall})
            return
        if method == "PUT" and not m[2]:
            body = self._body()
            firewall.update({k: body[k] for k in ("name", "labels") if k in body})
            st.writes.append(
                {"command": "update_firewall", "firewall": firewall["name"], **{k: body[k] for k in ("name", "labels") if k in body}}
            )
            st.save()
            self._send(200, {"firewall": firewall})
            return
        if method == "POST" and m[3] == "set_rules":
            firewall["rules"] = [self._rule(r) for r in self._body().get("rules") or []]
            st.writes.append({"command": "set_rules", "firewall": firewall["name"], "rules": firewall["rules"]})
            st.save()
            self._send(201, {"actions": [self._action("set_firewall_rules", [{"id": firewall["id"], "type": "firewall"}])]})
            return
        if method == "POST" and m[3] == "apply_to_resources":
            actions = []
            for res in self._body().get("apply_to") or []:
                sid = int((res.get("server") or {}).get("id", 0))
                if res.get("type") != "server" or sid not in st.servers:
                    self._error(422, "only existing servers can be applied to here")
                    return
                firewall["applied_to"].append({"type": "server", "server": {"id": sid}})
                st.servers[sid]["public_net"]["firewalls"].append({"id": firewall["id"], "status": "applied"})
                st.writes.append({"command": "apply_firewall", "firewall": firewall["name"], "server": st.servers[sid]["name"]})
                actions.append(self._action("apply_firewall", [{"id": firewall["id"], "type": "firewall"}, {"id": sid, "type": "server"}]))
            st.save()
            self._send(201, {"actions": actions})
            return
        self._error(404, f"no route for {method} {path}")

    def _control(self, method: str) -> None:
        st = self.state
        path = urlparse(self.path).path
        with st.lock:
            if method == "GET" and path == "/__fake/state":
                doc = {"servers": list(st.servers.values()), "firewalls": list(st.firewalls.values())}
                self._send(200, {**doc, "writes": st.writes, "requests": st.requests})
            elif method == "POST" and path == "/__fake/faults":
                body = self._body()
                st.faults.extend([int(body["status"])] * int(body.get("count", 1)))
                self._send(200, {"faults": st.faults})
            elif method == "POST" and path == "/__fake/servers":
                body = self._body()
                self._send(201, {"server": st.add_server(body["name"], body.get("backup_window"))})
            else:
                self._send(404, {"error": {"code": "not_found", "message": "no such control endpoint", "details": {}}})

    def do_GET(self) -> None:
        (self._control if self.path.startswith("/__fake/") else self._api)("GET")

    def do_POST(self) -> None:
        (self._control if self.path.startswith("/__fake/") else self._api)("POST")

    def do_DELETE(self) -> None:
        self._api("DELETE")

    def do_PUT(self) -> None:
        self._api("PUT")


def make_server(port: int, token: str, servers: list[str], state_file: Path | None = None) -> ThreadingHTTPServer:
    state = State(token, state_file)
    for name in servers:
        state.add_server(name)
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    return httpd


def main() -> int:
    p = argparse.ArgumentParser(description="fake Hetzner Cloud API on 127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", required=True)
    p.add_argument("--server", action="append", default=[], help="a server name to create (backups off)")
    p.add_argument("--state-file", type=Path, help="keep server state across restarts")
    p.add_argument("--port-file", type=Path, help="write the bound port here")
    args = p.parse_args()
    httpd = make_server(args.port, args.token, args.server, args.state_file)
    port = httpd.server_address[1]
    if args.port_file:
        args.port_file.write_text(f"{port}\n")
    print(f"listening on http://127.0.0.1:{port}/v1", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
