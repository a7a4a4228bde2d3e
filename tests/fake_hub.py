"""A tiny in-memory stand-in for the Hugging Face Hub's HTTP API, so that huggingface_hub's own client
(`HfApi.upload_folder`, `snapshot_download`) publishes and downloads for real, and writes its cache in its own
layout, without the network. Only what those calls use: create repo/branch, card check, preupload, commit,
revision info, tree listing and file download."""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse


def _blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hub_app() -> FastAPI:
    repos: dict[str, dict] = {}  # repo id -> {"refs": {branch: commit}, "commits": {commit: {path: bytes}}}
    app = FastAPI()

    def files_at(repo: str, revision: str) -> tuple[str, dict[str, bytes]] | None:
        entry = repos.get(repo)
        if entry is None:
            return None
        commit = entry["refs"].get(revision, revision)
        return (commit, entry["commits"][commit]) if commit in entry["commits"] else None

    def not_found(kind: str) -> JSONResponse:
        return JSONResponse({"error": f"{kind} not found"}, status_code=404,
                            headers={"X-Error-Code": "RepoNotFound" if kind == "repo" else "RevisionNotFound"})

    @app.post("/api/repos/create")
    async def create(request: Request):
        body = await request.json()
        repo = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        repos.setdefault(repo, {"refs": {}, "commits": {}})
        return {"url": f"{request.base_url}{repo}", "name": repo, "id": repo}

    @app.post("/api/models/{org}/{name}/branch/{branch}")
    async def branch(org: str, name: str, branch: str):
        entry = repos[f"{org}/{name}"]
        if "main" in entry["refs"]:
            entry["refs"].setdefault(branch, entry["refs"]["main"])
        return {}

    @app.post("/api/validate-yaml")
    async def validate_yaml():
        return {"warnings": []}

    @app.post("/api/models/{org}/{name}/preupload/{revision}")
    async def preupload(request: Request, org: str, name: str, revision: str):
        body = await request.json()
        return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]]}

    @app.post("/api/models/{org}/{name}/commit/{revision}")
    async def commit(request: Request, org: str, name: str, revision: str):
        repo = f"{org}/{name}"
        entry = repos[repo]
        files = dict(entry["commits"].get(entry["refs"].get(revision, ""), {}))
        for line in (await request.body()).splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        sha = hashlib.sha1(repr((sorted(files.items()), time.time_ns())).encode()).hexdigest()
        entry["commits"][sha] = files
        entry["refs"][revision] = sha
        return {"commitOid": sha, "commitUrl": f"{request.base_url}{repo}/commit/{sha}"}

    @app.get("/api/models/{org}/{name}/revision/{revision}")
    async def revision_info(org: str, name: str, revision: str):
        found = files_at(f"{org}/{name}", revision)
        if found is None:
            return not_found("repo" if f"{org}/{name}" not in repos else "revision")
        sha, files = found
        return {"id": f"{org}/{name}", "sha": sha, "private": False, "siblings": [{"rfilename": p} for p in files]}

    @app.get("/api/models/{org}/{name}/tree/{revision}")
    async def tree(org: str, name: str, revision: str):
        found = files_at(f"{org}/{name}", revision)
        if found is None:
            return not_found("revision")
        return [{"type": "file", "path": p, "size": len(d), "oid": _blob_oid(d)} for p, d in found[1].items()]

    @app.api_route("/{org}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
    async def resolve(request: Request, org: str, name: str, revision: str, path: str):
        found = files_at(f"{org}/{name}", revision)
        if found is None or path not in found[1]:
            return JSONResponse({"error": "entry not found"}, status_code=404, headers={"X-Error-Code": "EntryNotFound"})
        data = found[1][path]
        headers = {"X-Repo-Commit": found[0], "ETag": f'"{_blob_oid(data)}"', "Content-Length": str(len(data))}
        return Response(b"" if request.method == "HEAD" else data, headers=headers,
                        media_type="application/octet-stream")

    return app


class FakeHub:
    """The fake Hub served by uvicorn in a thread: `with FakeHub() as url: ...`."""

    def __enter__(self) -> str:
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(hub_app(), host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
