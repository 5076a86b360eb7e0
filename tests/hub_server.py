"""A small Hugging Face Hub server for tests: real HTTP, real git-like commits, on local disk.

The real huggingface.co is unreachable here and no self-hostable Hub with uploads installs, so the
Hub tests run huggingface_hub / transformers / peft client code against this server instead. It
implements what huggingface_hub 2.4 calls for create / upload / download (see the route table in
``_HubHandler``) and answers anything else with 501, recording the call in ``HubServer.unhandled``
so that a test fails, instead of passing silently, when the client starts calling something new.

Behaviour kept faithful to the Hub where the client depends on it:
- repos (model, dataset) hold commits per branch; ``create`` makes an initial commit holding the
  Hub's default ``.gitattributes``; commits are NDJSON (``header``, ``file``, ``lfsFile``,
  ``deletedFile``, ``deletedFolder``), ``parentCommit`` is checked (412 when stale);
- ``preupload`` marks a file "lfs" when ``.gitattributes`` routes it to LFS, when it is over 10 MiB
  or binary (a NUL byte in its 512-byte sample), else "regular" (sent inline, base64);
- LFS objects go through the Git LFS batch API (client must set ``HF_HUB_DISABLE_XET=1``): upload
  and download URLs point at a second listener (the "CDN", another origin) and are HMAC-signed, so
  the client sends them no token, exactly as with S3/CloudFront;
- ``resolve`` answers regular files with ETag (git blob sha1) and LFS files with a 302 to the CDN
  carrying X-Linked-Etag (sha256) and X-Linked-Size; both carry X-Repo-Commit;
- private repos: anonymous callers get 401 and other users 404, both with X-Error-Code RepoNotFound;
  writes need a token whose user owns the namespace (or is a member of the org);
- README.md metadata is validated (YAML mapping, model-index shape) by /api/validate-yaml and again
  on commit, as the Hub does.

Not implemented (501): pull requests, tags, Xet, expand=true listings, Spaces, deletion of repos.
Bodies are held in memory: this serves test-sized files.

Run by hand:  python tests/hub_server.py --root /tmp/hub --token alice=hf_test_alice
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub's limit for regular (inline) files
SIGNED_URL_TTL_S = 3600

# The head of the .gitattributes the Hub writes into every new repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib",
        "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot",
        "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors",
        "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip",
        "*.zst", "*tfevents*",
    )
)  # fmt: skip

_REPO = r"(?P<ns>[A-Za-z0-9][\w.-]*)/(?P<name>[\w.-]+?)"
_API_REPO = r"^/api/(?P<type>models|datasets)/" + _REPO
_WEB_REPO = r"^/(?:(?P<prefix>datasets)/)?" + _REPO


def git_blob_sha1(data: bytes) -> str:
    """Git's object id of a blob: sha1 over ``b"blob <size>\\0" + data`` (what the Hub reports as oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer file that git stores in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def card_metadata_errors(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README.md's YAML block, checked as the Hub checks model cards."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if match is None:
        return [], ["Empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"Invalid YAML: {err}"], []
    if meta is None:
        return [], ["Empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return ["YAML metadata must be a mapping"], []
    errors = []
    for key in ("tags", "datasets", "base_model", "language"):
        value = meta.get(key)
        if value is not None and not isinstance(value, str) and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            errors.append(f'"{key}" must be a string or a list of strings')
    if "library_name" in meta and not isinstance(meta["library_name"], str):
        errors.append('"library_name" must be a string')
    for i, model in enumerate(meta.get("model-index") or []):
        where = f'"model-index[{i}]"'
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f"{where}.name must be a string")
            continue
        for j, result in enumerate(model.get("results") or []):
            at = f"{where}.results[{j}]"
            if not isinstance((result.get("task") or {}).get("type"), str):
                errors.append(f"{at}.task.type must be a string")
            dataset = result.get("dataset") or {}
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                errors.append(f"{at}.dataset must have string type and name")
            metrics = result.get("metrics")
            if not metrics or not all(
                isinstance(m, dict) and isinstance(m.get("type"), str) and "value" in m for m in metrics
            ):
                errors.append(f"{at}.metrics must be a non-empty list of {{type, value}}")
    return errors, []


class HubError(Exception):
    """An error answer: HTTP status, message, and the X-Error-Code huggingface_hub dispatches on."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class Hub:
    """Repos on disk: ``<root>/<type>s/<ns>/<name>/{repo.json, commits/, objects/, lfs/}``.

    ``repo.json`` holds ``private`` and ``refs`` (branch -> commit oid). A commit is a JSON file
    with its parents, title, message, author, date and the full file map
    ``{path: {"oid": git blob sha1, "size": bytes, "lfs": sha256 or None}}``; regular contents
    live in ``objects/<git sha1>``, LFS contents in ``lfs/<sha256>``.
    """

    def __init__(self, root: Path, tokens: dict[str, str], orgs: dict[str, list[str]] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens)  # token -> user name
        self.orgs = {user: set(names) for user, names in (orgs or {}).items()}
        self.lock = threading.RLock()
        self.secret = secrets.token_bytes(32)  # signs CDN URLs
        self.url = self.cdn_url = ""  # set by HubServer once listening
        self.unhandled: list[str] = []  # "METHOD /path" the server does not implement
        self.requests: list[tuple[str, str, int]] = []  # (method, path without query, status)
        self.errors: list[str] = []  # exceptions inside the server (bugs)

    # --- storage -------------------------------------------------------------------------------
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / f"{repo_type}s" / repo_id

    def repo_meta(self, repo_type: str, repo_id: str) -> dict | None:
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _save_meta(self, repo_type: str, repo_id: str, meta: dict) -> None:
        path = self.repo_dir(repo_type, repo_id) / "repo.json"
        partial = path.with_suffix(".partial")  # readers never see half a file
        partial.write_text(json.dumps(meta, indent=1))
        partial.replace(path)

    def commit_data(self, repo_type: str, repo_id: str, oid: str) -> dict:
        return json.loads((self.repo_dir(repo_type, repo_id) / "commits" / f"{oid}.json").read_text())

    def store_regular(self, repo_type: str, repo_id: str, data: bytes) -> dict:
        oid = git_blob_sha1(data)
        path = self.repo_dir(repo_type, repo_id) / "objects" / oid
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return {"oid": oid, "size": len(data), "lfs": None}

    def lfs_path(self, repo_type: str, repo_id: str, sha256: str) -> Path:
        return self.repo_dir(repo_type, repo_id) / "lfs" / sha256

    def read_entry(self, repo_type: str, repo_id: str, entry: dict) -> bytes:
        if entry["lfs"]:
            return self.lfs_path(repo_type, repo_id, entry["lfs"]).read_bytes()
        return (self.repo_dir(repo_type, repo_id) / "objects" / entry["oid"]).read_bytes()

    # --- repos, refs, commits ------------------------------------------------------------------
    def create_repo(self, repo_type: str, repo_id: str, private: bool, author: str) -> bool:
        """Create with an initial commit holding .gitattributes; False if it already exists."""
        with self.lock:
            if self.repo_meta(repo_type, repo_id) is not None:
                return False
            self.repo_dir(repo_type, repo_id).mkdir(parents=True)
            self._save_meta(repo_type, repo_id, {"private": private, "refs": {}, "createdAt": _now()})
            files = {".gitattributes": self.store_regular(repo_type, repo_id, DEFAULT_GITATTRIBUTES.encode())}
            self.write_commit(repo_type, repo_id, "main", files, "initial commit", "", author)
            return True

    def write_commit(self, repo_type, repo_id, branch, files, title, message, author) -> str:
        with self.lock:
            meta = self.repo_meta(repo_type, repo_id)
            parent = meta["refs"].get(branch)
            commit = {
                "parents": [parent] if parent else [],
                "title": title,
                "message": message,
                "author": author,
                "date": _now(),
                "files": files,
            }
            oid = hashlib.sha1(json.dumps(commit, sort_keys=True).encode()).hexdigest()
            commits = self.repo_dir(repo_type, repo_id) / "commits"
            commits.mkdir(exist_ok=True)
            (commits / f"{oid}.json").write_text(json.dumps(commit, indent=1))
            meta["refs"][branch] = oid
            meta["lastModified"] = commit["date"]
            self._save_meta(repo_type, repo_id, meta)
            return oid

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> tuple[str, dict]:
        """A branch name or a full commit oid -> (commit oid, commit); 404 RevisionNotFound else."""
        meta = self.repo_meta(repo_type, repo_id)
        oid = meta["refs"].get(revision)
        if oid is None and re.fullmatch(r"[0-9a-f]{40}", revision):
            if (self.repo_dir(repo_type, repo_id) / "commits" / f"{revision}.json").is_file():
                oid = revision
        if oid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return oid, self.commit_data(repo_type, repo_id, oid)

    # --- auth ------------------------------------------------------------------------------------
    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, ()))

    def signed(self, action: str, key: str) -> str:
        """Query string of a URL the CDN accepts without a token until it expires (like S3's)."""
        expires = int(time.time()) + SIGNED_URL_TTL_S
        sig = hmac.new(self.secret, f"{action}:{key}:{expires}".encode(), "sha256").hexdigest()
        return f"expires={expires}&sig={sig}"

    def check_signature(self, action: str, key: str, query: dict) -> None:
        try:
            expires = int(query["expires"][0])
            sig = query["sig"][0]
        except (KeyError, ValueError):
            raise HubError(403, "missing signature") from None
        good = hmac.new(self.secret, f"{action}:{key}:{expires}".encode(), "sha256").hexdigest()
        if expires < time.time() or not hmac.compare_digest(sig, good):
            raise HubError(403, "bad or expired signature")

    # --- views for test assertions -------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """{path: content} of a revision."""
        _, commit = self.resolve(repo_type, repo_id, revision)
        return {p: self.read_entry(repo_type, repo_id, e) for p, e in commit["files"].items()}

    def history(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[dict]:
        """Commits from the head of ``revision`` back to the initial one, each with its ``oid``."""
        oid, commit = self.resolve(repo_type, repo_id, revision)
        out = [{"oid": oid, **commit}]
        while out[-1]["parents"]:
            oid = out[-1]["parents"][0]
            out.append({"oid": oid, **self.commit_data(repo_type, repo_id, oid)})
        return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_lfs_path(path: str, gitattributes: str) -> bool:
    """Whether a .gitattributes routes ``path`` to LFS (patterns without '/' match the basename)."""
    for line in gitattributes.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith("#") or "filter=lfs" not in parts[1:]:
            continue
        pattern = parts[0]
        target = path if "/" in pattern else PurePosixPath(path).name
        if fnmatch.fnmatchcase(target, pattern.replace("**/", "")):
            return True
    return False


def _is_ignored(path: str, gitignore: str) -> bool:
    """A .gitignore subset: non-comment lines as fnmatch patterns on the path or its basename."""
    for pattern in (line.strip() for line in gitignore.splitlines()):
        if pattern and not pattern.startswith("#"):
            pattern = pattern.strip("/")
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(PurePosixPath(path).name, pattern):
                return True
            if fnmatch.fnmatchcase(path, pattern + "/*"):
                return True
    return False


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server_version = "hfpipe-test-hub/1"

    # (method, compiled route, handler name); the CDN listener has its own table.
    API_ROUTES: list[tuple[str, re.Pattern, str]] = []
    CDN_ROUTES: list[tuple[str, re.Pattern, str]] = []

    @property
    def hub(self) -> Hub:
        return self.server.hub

    # --- plumbing ----------------------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - silence stderr; requests are recorded instead
        pass

    def log_request(self, code="-", size="-"):
        self.hub.requests.append((self.command, urlsplit(self.path).path, int(code)))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None):
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))  # HEAD too: the size of what GET would send
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _dispatch(self):
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body = self._read_body() if self.command in ("POST", "PUT") else b""
        routes = self.CDN_ROUTES if self.server.role == "cdn" else self.API_ROUTES
        for method, pattern, name in routes:
            match = pattern.match(url.path)
            if match and self.command in method.split("|"):
                try:
                    getattr(self, name)(**{k: unquote(v) if v else v for k, v in match.groupdict().items()})
                except HubError as err:
                    headers = {**err.headers, "X-Error-Message": err.message}
                    if err.code:
                        headers["X-Error-Code"] = err.code
                    self._json({"error": err.message}, err.status, headers)
                except Exception as err:  # a server bug: answer, and make the test fail
                    self.hub.errors.append(f"{self.command} {url.path}: {err!r}")
                    self._send(500, f"hub_server: {err!r}".encode(), {"Content-Type": "text/plain"})
                return
        self._unhandled()

    def _unhandled(self, what: str = ""):
        call = f"{self.command} {urlsplit(self.path).path}{' ' + what if what else ''}"
        self.hub.unhandled.append(call)
        self._send(501, f"hub_server: not implemented: {call}".encode(), {"Content-Type": "text/plain"})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # --- auth helpers ----------------------------------------------------------------------------
    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[token]

    def _repo(self, type: str, ns: str, name: str, write: bool = False) -> tuple[str, str, dict]:  # noqa: A002
        """(repo_type, repo_id, repo meta) if the caller may read (or write) it, else the Hub's errors."""
        repo_type, repo_id = type.removesuffix("s"), f"{ns}/{name}"
        user = self._user()
        meta = self.hub.repo_meta(repo_type, repo_id)
        visible = meta is not None and (not meta["private"] or self.hub.can_write(user, ns))
        if not visible:
            # The Hub does not tell "private" from "missing": 401 for anonymous callers, 404 otherwise.
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write and not self.hub.can_write(user, ns):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo_type, repo_id, meta

    def _web_type(self, prefix: str | None) -> str:
        return "datasets" if prefix else "models"

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.hub.url}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    # --- API ---------------------------------------------------------------------------------------
    def create_repo(self):
        payload = json.loads(self.body or b"{}")
        user = self._user()
        repo_type = payload.get("type") or "model"
        if repo_type not in ("model", "dataset"):
            return self._unhandled(f"(repo type {repo_type})")
        ns = payload.get("organization") or user
        repo_id = f"{ns}/{payload.get('name')}"
        if user is None or not self.hub.can_write(user, ns):
            raise HubError(401 if user is None else 403, f"You don't have the rights to create a repo under {ns}")
        if not re.fullmatch(_REPO, repo_id):
            raise HubError(400, f"Invalid repo name: {repo_id}")
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        url = self._repo_url(repo_type, repo_id)
        if not self.hub.create_repo(repo_type, repo_id, private, user):
            # huggingface_hub reads "url" even from the 409 when exist_ok=True.
            return self._json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self):
        payload = json.loads(self.body or b"{}")
        errors, warnings = card_metadata_errors(payload.get("content", ""))
        body = {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]}
        self._json(body, 400 if errors else 200)

    def repo_info(self, type, ns, name, rev=None):  # noqa: A002
        repo_type, repo_id, meta = self._repo(type, ns, name)
        oid, commit = self.hub.resolve(repo_type, repo_id, rev or "main")
        with_blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    pointer = lfs_pointer(entry["lfs"], entry["size"])
                    sibling["lfs"] = {"sha256": entry["lfs"], "size": entry["size"], "pointerSize": len(pointer)}
            siblings.append(sibling)
        self._json({
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": ns,
            "sha": oid, "private": meta["private"], "gated": False, "disabled": False,
            "createdAt": meta["createdAt"], "lastModified": commit["date"], "tags": [], "siblings": siblings,
        })  # fmt: skip

    def list_tree(self, type, ns, name, rev, path=None):  # noqa: A002
        repo_type, repo_id, _ = self._repo(type, ns, name)
        if self.query.get("expand", ["false"])[0].lower() in ("1", "true"):
            return self._unhandled("(expand=true)")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        _, commit = self.hub.resolve(repo_type, repo_id, rev)
        prefix = f"{path.strip('/')}/" if path else ""
        files = {p: e for p, e in commit["files"].items() if p.startswith(prefix)}
        if prefix and not files:
            raise HubError(404, f"{path} does not exist", "EntryNotFound")
        entries: dict[str, dict] = {}
        for file_path, entry in files.items():
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts)):
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0})
            if recursive or len(parts) == 1:
                item = {"type": "file", "path": file_path, "oid": entry["oid"], "size": entry["size"]}
                if entry["lfs"]:
                    pointer_size = len(lfs_pointer(entry["lfs"], entry["size"]))
                    item["lfs"] = {"oid": entry["lfs"], "size": entry["size"], "pointerSize": pointer_size}
                entries[file_path] = item
        for folder, item in entries.items():
            if item["type"] == "directory":  # a tree oid: hash of what the folder holds
                held = sorted((p, e["oid"]) for p, e in files.items() if p.startswith(folder + "/"))
                item["oid"] = hashlib.sha1(json.dumps(held).encode()).hexdigest()
        self._json([entries[key] for key in sorted(entries)])

    def list_refs(self, type, ns, name):  # noqa: A002
        _, _, meta = self._repo(type, ns, name)
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid} for b, oid in meta["refs"].items()]
        body = {"branches": branches, "tags": [], "converts": []}
        if self.query.get("include_prs"):
            body["pullRequests"] = []
        self._json(body)

    def create_branch(self, type, ns, name, branch):  # noqa: A002
        repo_type, repo_id, meta = self._repo(type, ns, name, write=True)
        starting_point = json.loads(self.body or b"{}").get("startingPoint") or "main"
        with self.hub.lock:
            if branch in self.hub.repo_meta(repo_type, repo_id)["refs"]:
                raise HubError(409, "Reference already exists")
            oid, _ = self.hub.resolve(repo_type, repo_id, starting_point)
            meta = self.hub.repo_meta(repo_type, repo_id)
            meta["refs"][branch] = oid
            self.hub._save_meta(repo_type, repo_id, meta)
        self._json({})

    def preupload(self, type, ns, name, rev):  # noqa: A002
        repo_type, repo_id, _ = self._repo(type, ns, name, write=True)
        if self.query.get("create_pr"):
            return self._unhandled("(create_pr)")
        head, commit = self.hub.resolve(repo_type, repo_id, rev)
        payload = json.loads(self.body)
        attributes = commit["files"].get(".gitattributes")
        gitattributes = self.hub.read_entry(repo_type, repo_id, attributes).decode() if attributes else ""
        gitignore = payload.get("gitIgnore")
        if gitignore is None and ".gitignore" in commit["files"]:
            gitignore = self.hub.read_entry(repo_type, repo_id, commit["files"][".gitignore"]).decode()
        answers = []
        for item in payload["files"]:
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item["sample"])
            lfs = size > LFS_SIZE_THRESHOLD or b"\0" in sample or _is_lfs_path(path, gitattributes)
            existing = commit["files"].get(path)
            # The client compares this oid with sha256 (lfs) or the git blob sha1 (regular) of its file.
            oid = None if existing is None else (existing["lfs"] or existing["oid"])
            ignored = bool(gitignore) and _is_ignored(path, gitignore)
            mode = "lfs" if lfs else "regular"
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": ignored, "oid": oid})
        self._json({"files": answers, "commitOid": head})

    def commit(self, type, ns, name, rev):  # noqa: A002
        repo_type, repo_id, meta = self._repo(type, ns, name, write=True)
        for unsupported in ("create_pr", "hot_reload"):
            if self.query.get(unsupported):
                return self._unhandled(f"({unsupported})")
        if rev not in meta["refs"]:
            raise HubError(404, f"Invalid rev id: {rev} (commits go to branches)", "RevisionNotFound")
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first NDJSON line must be the commit header")
        header = lines[0]["value"]
        with self.hub.lock:
            head, commit = self.hub.resolve(repo_type, repo_id, rev)
            parent = header.get("parentCommit")
            if parent and not head.startswith(parent):
                raise HubError(412, f"A commit has happened since {parent}: the head of {rev} is {head}")
            files = dict(commit["files"])
            for op in lines[1:]:
                self._apply(repo_type, repo_id, files, op["key"], op["value"])
            oid = self.hub.write_commit(
                repo_type, repo_id, rev, files, header["summary"], header.get("description", ""), self._user()
            )
        url = f"{self._repo_url(repo_type, repo_id)}/commit/{oid}"
        self._json({"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": ""})

    def _apply(self, repo_type: str, repo_id: str, files: dict, key: str, value: dict) -> None:
        path = value["path"]
        parts = PurePosixPath(path).parts
        if path.startswith("/") or ".." in parts or (parts and parts[0] == ".git"):
            raise HubError(400, f"invalid path in repo: {path}")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"unsupported encoding {value.get('encoding')} for {path}")
            data = base64.b64decode(value["content"])
            if path == "README.md":
                errors, _ = card_metadata_errors(data.decode("utf-8", errors="replace"))
                if errors:
                    raise HubError(400, "Invalid metadata in README.md: " + "; ".join(errors))
            files[path] = self.hub.store_regular(repo_type, repo_id, data)
        elif key == "lfsFile":
            sha256 = value["oid"]
            blob = self.hub.lfs_path(repo_type, repo_id, sha256)
            if value.get("algo", "sha256") != "sha256" or not blob.is_file():
                raise HubError(400, f"LFS object {sha256} for {path} was not uploaded to {repo_id}")
            size = blob.stat().st_size
            files[path] = {"oid": git_blob_sha1(lfs_pointer(sha256, size)), "size": size, "lfs": sha256}
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            inside = [p for p in files if p.startswith(path.rstrip("/") + "/")]
            if not inside:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in inside:
                del files[p]
        else:
            raise HubError(400, f"unknown commit operation {key!r}")

    # --- Git LFS batch API (upload) ----------------------------------------------------------------
    def lfs_batch(self, prefix, ns, name):
        repo_type, repo_id, _ = self._repo(self._web_type(prefix), ns, name, write=True)
        payload = json.loads(self.body)
        if payload.get("operation") != "upload" or payload.get("hash_algo", "sha256") != "sha256":
            return self._unhandled(f"(lfs {payload.get('operation')})")
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            answer = {"oid": oid, "size": size, "authenticated": True}
            if not self.hub.lfs_path(repo_type, repo_id, oid).is_file():  # else: already there, no actions
                key = f"{repo_type}s/{repo_id}/{oid}"
                verify = f"{self._repo_url(repo_type, repo_id)}.git/info/lfs/objects/verify"
                upload = f"{self.hub.cdn_url}/lfs-upload/{key}?size={size}&{self.hub.signed('PUT', key)}"
                answer["actions"] = {"upload": {"href": upload}, "verify": {"href": verify}}
            objects.append(answer)
        self._json({"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_verify(self, prefix, ns, name):
        repo_type, repo_id, _ = self._repo(self._web_type(prefix), ns, name, write=True)
        payload = json.loads(self.body)
        blob = self.hub.lfs_path(repo_type, repo_id, payload["oid"])
        if not blob.is_file() or blob.stat().st_size != int(payload["size"]):
            raise HubError(404, f"LFS object {payload['oid']} is missing or has the wrong size")
        self._json({"success": True})

    # --- downloads ---------------------------------------------------------------------------------
    def resolve_file(self, prefix, ns, name, rev, path):
        repo_type, repo_id, _ = self._repo(self._web_type(prefix), ns, name)
        oid, commit = self.hub.resolve(repo_type, repo_id, rev)
        entry = commit["files"].get(path)
        if entry is None:
            raise HubError(404, f"{path} does not exist at {rev}", "EntryNotFound", {"X-Repo-Commit": oid})
        if entry["lfs"]:
            key = f"{repo_type}s/{repo_id}/{entry['lfs']}"
            location = f"{self.hub.cdn_url}/lfs-blob/{key}?{self.hub.signed('GET', key)}"
            headers = {
                "Location": location, "X-Repo-Commit": oid, "ETag": f'"{entry["oid"]}"',
                "X-Linked-Etag": f'"{entry["lfs"]}"', "X-Linked-Size": entry["size"],
            }  # fmt: skip
            return self._send(302, b"", headers)
        data = self.hub.read_entry(repo_type, repo_id, entry)
        headers = {"X-Repo-Commit": oid, "ETag": f'"{entry["oid"]}"', "Content-Type": "application/octet-stream"}
        self._send_ranged(data, headers)

    def _send_ranged(self, data: bytes, headers: dict):
        """200 with the whole body, or 206 for a ``Range: bytes=a-[b]`` (a resumed download)."""
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match is None:
            return self._send(200, data, {**headers, "Accept-Ranges": "bytes"})
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else len(data) - 1
        if start >= len(data):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
        part = data[start : end + 1]
        self._send(206, part, {**headers, "Content-Range": f"bytes {start}-{start + len(part) - 1}/{len(data)}"})

    # --- the CDN listener --------------------------------------------------------------------------
    def cdn_upload(self, key):
        self.hub.check_signature("PUT", key, self.query)
        repo_type, rest = key.split("/", 1)
        repo_id, sha256 = rest.rsplit("/", 1)
        expected = int(self.query["size"][0])
        if len(self.body) != expected or hashlib.sha256(self.body).hexdigest() != sha256:
            raise HubError(400, f"uploaded content does not match oid {sha256} / size {expected}")
        blob = self.hub.lfs_path(repo_type.removesuffix("s"), repo_id, sha256)
        blob.parent.mkdir(parents=True, exist_ok=True)
        partial = blob.with_suffix(f".{secrets.token_hex(4)}.partial")
        partial.write_bytes(self.body)
        partial.replace(blob)
        self._send(200, b"", {"ETag": f'"{sha256}"'})

    def cdn_download(self, key):
        self.hub.check_signature("GET", key, self.query)
        repo_type, rest = key.split("/", 1)
        repo_id, sha256 = rest.rsplit("/", 1)
        blob = self.hub.lfs_path(repo_type.removesuffix("s"), repo_id, sha256)
        if not blob.is_file():
            raise HubError(404, "no such object")
        self._send_ranged(blob.read_bytes(), {"Content-Type": "application/octet-stream", "ETag": f'"{sha256}"'})


_HubHandler.API_ROUTES = [
    (m, re.compile(p), h)
    for m, p, h in [
        ("POST", r"^/api/repos/create$", "create_repo"),
        ("POST", r"^/api/validate-yaml$", "validate_yaml"),
        ("GET", _API_REPO + r"(?:/revision/(?P<rev>[^/]+))?$", "repo_info"),
        ("GET", _API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$", "list_tree"),
        ("GET", _API_REPO + r"/refs$", "list_refs"),
        ("POST", _API_REPO + r"/branch/(?P<branch>[^/]+)$", "create_branch"),
        ("POST", _API_REPO + r"/preupload/(?P<rev>[^/]+)$", "preupload"),
        ("POST", _API_REPO + r"/commit/(?P<rev>[^/]+)$", "commit"),
        ("POST", _WEB_REPO + r"\.git/info/lfs/objects/batch$", "lfs_batch"),
        ("POST", _WEB_REPO + r"\.git/info/lfs/objects/verify$", "lfs_verify"),
        ("GET|HEAD", _WEB_REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$", "resolve_file"),
    ]
]
_HubHandler.CDN_ROUTES = [
    ("PUT", re.compile(r"^/lfs-upload/(?P<key>.+)$"), "cdn_upload"),
    ("GET|HEAD", re.compile(r"^/lfs-blob/(?P<key>.+)$"), "cdn_download"),
]


class _Listener(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: Hub, role: str):
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.hub, self.role = hub, role


class HubServer:
    """The Hub API on one port of 127.0.0.1 and its "CDN" (signed LFS URLs) on another.

    >>> with HubServer(tmp, tokens={"hf_alice": "alice"}) as server:
    ...     env = server.client_env(token="hf_alice", hf_home=tmp / "home")  # for a subprocess
    """

    def __init__(self, root: Path, tokens: dict[str, str], orgs: dict[str, list[str]] | None = None):
        self.hub = Hub(root, tokens, orgs)
        self._listeners: list[_Listener] = []

    @property
    def url(self) -> str:
        return self.hub.url

    @property
    def unhandled(self) -> list[str]:
        return self.hub.unhandled

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        return self.hub.requests

    @property
    def errors(self) -> list[str]:
        return self.hub.errors

    def start(self) -> HubServer:
        for role in ("api", "cdn"):
            listener = _Listener(self.hub, role)
            threading.Thread(target=listener.serve_forever, args=(0.05,), name=f"hub-{role}", daemon=True).start()
            self._listeners.append(listener)
        self.hub.url = "http://127.0.0.1:%d" % self._listeners[0].server_address[1]
        self.hub.cdn_url = "http://127.0.0.1:%d" % self._listeners[1].server_address[1]
        return self

    def stop(self) -> None:
        for listener in self._listeners:
            listener.shutdown()
            listener.server_close()
        self._listeners.clear()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client_env(self, token: str | None, hf_home: Path, base: dict | None = None) -> dict[str, str]:
        """Environment for a process whose huggingface_hub must talk to this server.

        huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_DISABLE_XET once, at import:
        they only take effect in a process started with them, hence subprocesses.
        ``hf_home`` isolates the download cache and any stored login from the user's own.
        """
        import os

        env = dict(os.environ if base is None else base)
        for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_TOKEN_PATH"):
            env.pop(key, None)
        env.update(
            HF_ENDPOINT=self.url,
            HF_HUB_OFFLINE="0",
            HF_HUB_DISABLE_XET="1",
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_ETAG_TIMEOUT="5",
        )
        if token is not None:
            env["HF_TOKEN"] = token
        return env

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        return self.hub.files(repo_id, revision, repo_type)

    def history(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[dict]:
        return self.hub.history(repo_id, revision, repo_type)


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--token", action="append", default=[], metavar="USER=TOKEN")
    args = parser.parse_args()
    tokens = {token: user for user, token in (item.split("=", 1) for item in args.token)}
    with HubServer(args.root, tokens) as server:
        print(f"HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1  (Ctrl-C stops)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    _main()
