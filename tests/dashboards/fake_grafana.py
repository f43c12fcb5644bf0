"""A tiny in-memory stand-in for Grafana's HTTP API (no Grafana is installable here).

It implements only the endpoints ``dashboards push`` uses, with Grafana's status codes
(401 on a bad token, 404 on unknown uids, 412-free overwrite semantics) and records
every request so tests can assert on what was sent.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeGrafana:
    def __init__(self, token: str = "secret-token", fail_first: int = 0):
        self.token = token
        self.fail_first = fail_first  # answer the first N requests with 503 (retry test)
        self.requests: list[tuple[str, str, Any]] = []
        self.datasources: dict[str, dict] = {}
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.versions: dict[str, int] = {}
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                outer.requests.append((method, self.path, body))
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    return self._reply(503, {"message": "starting"})
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    return self._reply(401, {"message": "invalid API key"})
                code, out = outer.route(method, self.path, body)
                self._reply(code, out)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "datasources", "uid"]:
            uid = parts[3]
            if method == "GET":
                return (200, self.datasources[uid]) if uid in self.datasources else (404, {"message": "not found"})
            if method == "PUT":
                if uid not in self.datasources:
                    return 404, {"message": "not found"}
                self.datasources[uid] = {**body, "id": self.datasources[uid]["id"]}
                return 200, {"message": "Datasource updated"}
        if parts == ["api", "datasources"] and method == "POST":
            if body["uid"] in self.datasources:
                return 409, {"message": "data source with the same uid already exists"}
            self.datasources[body["uid"]] = {**{k: v for k, v in body.items() if k != "secureJsonData"},
                                             "id": len(self.datasources) + 1}
            return 200, {"message": "Datasource added"}
        if parts[:2] == ["api", "folders"]:
            if method == "GET" and len(parts) == 3:
                return (200, self.folders[parts[2]]) if parts[2] in self.folders else (404, {"message": "not found"})
            if method == "POST":
                self.folders[body["uid"]] = body
                return 200, body
        if parts[:3] == ["api", "dashboards", "uid"] and method == "GET":
            uid = parts[3]
            if uid not in self.dashboards:
                return 404, {"message": "Dashboard not found"}
            return 200, {"dashboard": self.dashboards[uid]["dashboard"], "meta": {"folderUid": self.dashboards[uid]["folderUid"]}}
        if parts == ["api", "dashboards", "db"] and method == "POST":
            d = body["dashboard"]
            if d["uid"] in self.dashboards and not body.get("overwrite"):
                return 412, {"message": "version-mismatch"}
            if body["folderUid"] not in self.folders:
                return 400, {"message": "folder not found"}
            v = self.versions.get(d["uid"], 0) + 1
            self.versions[d["uid"]] = v
            self.dashboards[d["uid"]] = {"dashboard": {**d, "id": 100 + len(self.dashboards), "version": v},
                                         "folderUid": body["folderUid"]}
            return 200, {"status": "success", "uid": d["uid"], "version": v}
        return 404, {"message": f"no route {method} {path}"}

    def __enter__(self) -> "FakeGrafana":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
