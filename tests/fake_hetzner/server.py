"""A fake Hetzner Cloud API on 127.0.0.1, shaped like the real one (see REFERENCE.md).

Endpoints (under /v1, Bearer token required):
  GET  /servers?name=NAME              {"servers": [...], "meta": {"pagination": {...}}}
  GET  /servers?label_selector=K=V,K2  the servers carrying every label named (K=V, K!=V, K, !K)
  POST /servers                        201 {"server", "action", "next_actions", "root_password"}: the name must be free
  GET  /servers/{id}                   {"server": {...}}
  DELETE /servers/{id}                 200 {"action": {...}}
  GET  /server_types, /images, /locations ?name=   the catalogue the server module resolves names in
  GET|POST /ssh_keys, GET|PUT|DELETE /ssh_keys/{id}   SSH keys (name and fingerprint unique)
  POST /servers/{id}/actions/enable_backup    201 {"action": {...}}
  POST /servers/{id}/actions/disable_backup   201 {"action": {...}}
  GET  /actions/{id}                   {"action": {...}}: "running" on the first poll, then "success"
Errors use {"error": {"code", "message", "details"}}: 401 unauthorized, 404 not_found, 422 invalid_input.

Test control (no token), under /__fake:
  GET  /__fake/state                   servers, write calls, requests seen
  POST /__fake/faults {"status": 429, "count": 2}   the next N API requests answer that error
  POST /__fake/servers {"name": "...", "backup_window": null, "labels": {...}}   add a server

Run: python3 tests/fake_hetzner/server.py --port 0 --token T --server NAME [--state-file F]
It prints "listening on http://127.0.0.1:PORT/v1" once ready.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
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


LOCATIONS = {
    "fsn1": {
        "id": 1,
        "description": "Falkenstein DC Park 1",
        "country": "DE",
        "city": "Falkenstein",
        "latitude": 50.47612,
        "longitude": 12.370071,
    },
    "nbg1": {
        "id": 2,
        "description": "Nuremberg DC Park 1",
        "country": "DE",
        "city": "Nuremberg",
        "latitude": 49.452102,
        "longitude": 11.076665,
    },
    "hel1": {
        "id": 3,
        "description": "Helsinki DC Park 1",
        "country": "FI",
        "city": "Helsinki",
        "latitude": 60.169855,
        "longitude": 24.938379,
    },
}
SERVER_TYPES = {"cx22": (22, 2, 4.0, 40), "cx23": (104, 2, 4.0, 40), "cx33": (105, 4, 8.0, 80)}
IMAGES = {"ubuntu-24.04": (161547269, "ubuntu", "24.04"), "debian-13": (310557660, "debian", "13")}


def location_doc(name: str) -> dict[str, Any]:
    return {"name": name, "network_zone": "eu-central", **LOCATIONS[name]}


def server_type_doc(name: str) -> dict[str, Any]:
    tid, cores, memory, disk = SERVER_TYPES[name]
    return {
        "id": tid,
        "name": name,
        "description": name.upper(),
        "category": "cost_optimized",
        "cores": cores,
        "memory": memory,
        "disk": disk,
        "storage_type": "local",
        "cpu_type": "shared",
        "architecture": "x86",
        "deprecated": False,
        "deprecation": None,
        "included_traffic": 21990232555520,
        "prices": [],
        "locations": [{"id": loc["id"], "name": n, "deprecation": None} for n, loc in LOCATIONS.items()],
    }


def image_doc(name: str) -> dict[str, Any]:
    iid, flavor, version = IMAGES[name]
    return {
        "id": iid,
        "type": "system",
        "status": "available",
        "name": name,
        "description": f"{flavor.capitalize()} {version}",
        "image_size": None,
        "disk_size": 5,
        "created": CREATED,
        "created_from": None,
        "bound_to": None,
        "os_flavor": flavor,
        "os_version": version,
        "rapid_deploy": True,
        "protection": {"delete": False},
        "deprecated": None,
        "deleted": None,
        "labels": {},
        "architecture": "x86",
    }


def server_doc(
    sid: int,
    name: str,
    backup_window: str | None,
    *,
    server_type: str = "cx22",
    image: str = "ubuntu-24.04",
    location_name: str = "fsn1",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    location = location_doc(location_name)
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
        "server_type": server_type_doc(server_type),
        "datacenter": {
            "id": 4,
            "name": f"{location_name}-dc14",
            "description": f"{location['city']} DC14",
            "location": location,
            "server_types": {"supported": [22], "available": [22], "available_for_migration": [22]},
        },
        "image": image_doc(image),
        "iso": None,
        "rescue_enabled": False,
        "locked": False,
        "backup_window": backup_window,
        "outgoing_traffic": 0,
        "ingoing_traffic": 0,
        "included_traffic": 21990232555520,
        "protection": {"delete": False, "rebuild": False},
        "labels": {"role": "neo-vps"} if labels is None else dict(labels),
        "volumes": [],
        "load_balancers": [],
        "primary_disk_size": 40,
        "placement_group": None,
    }


SERVER_KEYS = ("name", "backup_window", "server_type", "image", "location_name", "labels")


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """The API's label selector, the forms this repository uses: k=v, k==v, k!=v, k, !k (comma = and)."""
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def fingerprint(public_key: str) -> str:
    """The MD5 fingerprint the API gives an SSH key (aa:bb:...)."""
    digest = hashlib.md5(base64.b64decode(public_key.split()[1]), usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


class State:
    def __init__(self, token: str, state_file: Path | None = None) -> None:
        self.token = token
        self.state_file = state_file
        self.lock = threading.Lock()
        self.servers: dict[int, dict[str, Any]] = {}
        self.server_args: dict[int, dict[str, Any]] = {}
        self.firewalls: dict[int, dict[str, Any]] = {}
        self.ssh_keys: dict[int, dict[str, Any]] = {}
        self.actions: dict[int, dict[str, Any]] = {}
        self.polls: dict[int, int] = {}
        self.writes: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.faults: list[int] = []
        self.next_id = 42
        if state_file and state_file.exists():
            saved = json.loads(state_file.read_text())
            for s in saved.get("servers", []):
                self.put_server(s["id"], {k: s[k] for k in SERVER_KEYS if k in s})
                self.next_id = max(self.next_id, s["id"] + 1)
            for k in saved.get("ssh_keys", []):
                self.ssh_keys[k["id"]] = k
                self.next_id = max(self.next_id, k["id"] + 1)

    def put_server(self, sid: int, args: dict[str, Any]) -> dict[str, Any]:
        self.server_args[sid] = args
        name, window = args["name"], args.get("backup_window")
        self.servers[sid] = server_doc(sid, name, window, **{k: v for k, v in args.items() if k not in ("name", "backup_window")})
        return self.servers[sid]

    def save(self) -> None:
        if self.state_file:
            servers = [{"id": sid, **args, "backup_window": self.servers[sid]["backup_window"]} for sid, args in self.server_args.items()]
            doc = {"servers": servers, "ssh_keys": list(self.ssh_keys.values())}
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc))
            tmp.replace(self.state_file)

    def add_server(self, name: str, backup_window: str | None = None, **kw: Any) -> dict[str, Any]:
        for s in self.servers.values():
            if s["name"] == name:
                return s
        sid = self.next_id
        self.next_id += 1
        server = self.put_server(sid, {"name": name, "backup_window": backup_window, **kw})
        self.save()
        return server

    def delete_server(self, sid: int) -> None:
        del self.servers[sid]
        del self.server_args[sid]
        for firewall in self.firewalls.values():
            firewall["applied_to"] = [a for a in firewall["applied_to"] if a.get("server", {}).get("id") != sid]
        self.save()


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
                selector = query.get("label_selector", [None])[0]
                found = [
                    s
                    for s in st.servers.values()
                    if (name is None or s["name"] == name) and (selector is None or selector_matches(selector, s["labels"]))
                ]
                self._send(200, {"servers": found, "meta": {"pagination": self._pagination(len(found))}})
                return
            if method == "POST" and path == "/servers":
                self._create_server(self._body())
                return
            if method == "DELETE" and re.fullmatch(r"/servers/\d+", path):
                sid = int(path.rsplit("/", 1)[1])
                server = st.servers.get(sid)
                if server is None:
                    self._error(404)
                    return
                st.writes.append({"command": "delete_server", "server": server["name"], "labels": server["labels"]})
                st.delete_server(sid)
                self._send(200, {"action": self._action("delete_server", [{"id": sid, "type": "server"}])})
                return
            catalogue = {
                "/server_types": (SERVER_TYPES, server_type_doc),
                "/images": (IMAGES, image_doc),
                "/locations": (LOCATIONS, location_doc),
            }
            if method == "GET" and path in catalogue:
                names, doc = catalogue[path]
                name = parse_qs(url.query).get("name", [None])[0]
                found = [doc(n) for n in names if name is None or n == name]
                self._send(200, {path[1:]: found, "meta": {"pagination": self._pagination(len(found))}})
                return
            if path == "/ssh_keys" or path.startswith("/ssh_keys/"):
                self._ssh_keys(method, path, url.query)
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

    @staticmethod
    def _pagination(total: int) -> dict[str, Any]:
        return {"page": 1, "per_page": 25, "previous_page": None, "next_page": None, "last_page": 1, "total_entries": total}

    def _create_server(self, body: dict[str, Any]) -> None:
        """POST /servers, as the API checks it: a free name, a known type, image and location, keys that exist. Called under the lock."""
        st = self.state
        name = body.get("name")
        if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", str(name)):
            self._error(422, "invalid input in field 'name'", {"fields": [{"name": "name", "messages": ["invalid name"]}]})
            return
        if any(s["name"] == name for s in st.servers.values()):
            self._send(
                409,
                {
                    "error": {
                        "code": "uniqueness_error",
                        "message": "server name is already used",
                        "details": {"fields": [{"name": "name"}]},
                    }
                },
            )
            return
        # the API takes an id or a name for each (the hcloud client sends the id it looked up)
        resolved: dict[str, str] = {}
        for field, known, default in (("server_type", SERVER_TYPES, None), ("image", IMAGES, None), ("location", LOCATIONS, "fsn1")):
            value = str(body.get(field) or default)
            by_id = {str(v[0] if isinstance(v, tuple) else v["id"]): k for k, v in known.items()}
            resolved[field] = by_id.get(value, value)
            if resolved[field] not in known:
                self._error(422, f"invalid input in field '{field}'", {"fields": [{"name": field, "messages": [f"unknown {value}"]}]})
                return
        server_type, image, location = resolved["server_type"], resolved["image"], resolved["location"]
        key_ids = []
        for ref in body.get("ssh_keys") or []:
            kid = next((k["id"] for k in st.ssh_keys.values() if str(ref) in (str(k["id"]), k["name"])), None)
            if kid is None:
                details = {"fields": [{"name": "ssh_keys", "messages": [f"unknown key {ref}"]}]}
                self._error(422, "invalid input in field 'ssh_keys'", details)
                return
            key_ids.append(kid)
        labels = body.get("labels") or {}
        sid, st.next_id = st.next_id, st.next_id + 1
        server = st.put_server(
            sid,
            {"name": name, "backup_window": None, "server_type": server_type, "image": image, "location_name": location, "labels": labels},
        )
        st.writes.append(
            {
                "command": "create_server",
                "server": name,
                "server_type": server_type,
                "image": image,
                "location": location,
                "labels": labels,
                "ssh_keys": [st.ssh_keys[k]["name"] for k in key_ids],
            }
        )
        st.save()
        action = self._action("create_server", [{"id": sid, "type": "server"}])
        self._send(201, {"server": server, "action": action, "next_actions": [], "root_password": None})

    def _ssh_keys(self, method: str, path: str, query: str) -> None:
        """/ssh_keys: list by name or fingerprint, create, read, update (name, labels), delete. Called under the lock."""
        st = self.state
        if path == "/ssh_keys" and method == "GET":
            q = parse_qs(query)
            name, fp = q.get("name", [None])[0], q.get("fingerprint", [None])[0]
            selector = q.get("label_selector", [None])[0]
            found = [
                k
                for k in st.ssh_keys.values()
                if (name is None or k["name"] == name)
                and (fp is None or k["fingerprint"] == fp)
                and (selector is None or selector_matches(selector, k["labels"]))
            ]
            self._send(200, {"ssh_keys": found, "meta": {"pagination": self._pagination(len(found))}})
            return
        if path == "/ssh_keys" and method == "POST":
            body = self._body()
            try:
                fp = fingerprint(str(body.get("public_key")))
            except (IndexError, ValueError):
                self._error(422, "invalid input in field 'public_key'", {"fields": [{"name": "public_key", "messages": ["invalid"]}]})
                return
            if any(k["name"] == body.get("name") or k["fingerprint"] == fp for k in st.ssh_keys.values()):
                self._send(
                    409,
                    {"error": {"code": "uniqueness_error", "message": "SSH key with the same fingerprint already exists", "details": {}}},
                )
                return
            kid, st.next_id = st.next_id, st.next_id + 1
            key = {
                "id": kid,
                "name": body["name"],
                "fingerprint": fp,
                "public_key": body["public_key"],
                "labels": body.get("labels") or {},
                "created": CREATED,
            }
            st.ssh_keys[kid] = key
            st.writes.append({"command": "create_ssh_key", "ssh_key": key["name"], "labels": key["labels"]})
            st.save()
            self._send(201, {"ssh_key": key})
            return
        m = re.fullmatch(r"/ssh_keys/(\d+)", path)
        key = st.ssh_keys.get(int(m[1])) if m else None
        if key is None:
            self._error(404, "ssh key not found")
            return
        if method == "GET":
            self._send(200, {"ssh_key": key})
        elif method == "PUT":
            body = self._body()
            key.update({k: body[k] for k in ("name", "labels") if k in body})
            st.writes.append({"command": "update_ssh_key", "ssh_key": key["name"]})
            st.save()
            self._send(200, {"ssh_key": key})
        elif method == "DELETE":
            del st.ssh_keys[key["id"]]
            st.writes.append({"command": "delete_ssh_key", "ssh_key": key["name"], "labels": key["labels"]})
            st.save()
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._error(404, f"no route for {method} {path}")

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
                doc = {
                    "servers": list(st.servers.values()),
                    "firewalls": list(st.firewalls.values()),
                    "ssh_keys": list(st.ssh_keys.values()),
                }
                self._send(200, {**doc, "writes": st.writes, "requests": st.requests})
            elif method == "POST" and path == "/__fake/faults":
                body = self._body()
                st.faults.extend([int(body["status"])] * int(body.get("count", 1)))
                self._send(200, {"faults": st.faults})
            elif method == "POST" and path == "/__fake/servers":
                body = self._body()
                extra = {k: body[k] for k in ("server_type", "image", "labels") if k in body}
                self._send(201, {"server": st.add_server(body["name"], body.get("backup_window"), **extra)})
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
