"""Static server for the web page: web/www at /, tests/data/fixtures at
/fixtures/ and models/cache at /models/ (read-only: GET and HEAD only), on
127.0.0.1. Usage: python3 web/serve.py [PORT]

It also plays a small Hugging Face hub at /hub/, so the page's hub loading
(index.html?hub=http://HOST:PORT/hub) runs without network:
  /hub/<owner>/<name>/resolve/main/<file>   like huggingface.co's resolve URLs
  /hub-stats                                JSON {path: requests} of /hub/ and
                                            /hub-lfs/ so far (tests diff it)
The repos are fixed (HUB_REPOS). What the real hub does and we copy, because
the page must cope with it: CORS for every origin; a missing file in a repo
is 404 with X-Error-Code EntryNotFound; a repo that does not exist is 401
RepoNotFound (the hub answers anonymous requests so, to not reveal private
repos); an unknown revision is 404 RevisionNotFound; weight files (LFS on the
hub) answer 302 to a storage URL (here /hub-lfs/...), so fetch follows a
redirect and the page must key its cache on the resolve URL. The page asks
for known file names (config.json, ..., model.safetensors), not the hub API,
so /api/models is not played."""

import http.server
import json
import os
import shutil
import sys
import threading
from collections import Counter
from functools import partial
from urllib.parse import quote, unquote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOUNTS = {
    "/fixtures/": os.path.join(ROOT, "tests", "data", "fixtures"),
    "/models/": os.path.join(ROOT, "models", "cache"),
}
WWW = os.path.join(ROOT, "web", "www")
# owner/name -> folder whose files the repo holds (a repo whose folder is missing does not exist).
HUB_REPOS = {
    "local/tiny-llama": os.path.join(ROOT, "tests", "data", "fixtures", "tiny-llama"),
    "local/smollm2": os.path.join(ROOT, "models", "cache", "smollm2"),
}
# Files the hub keeps in LFS, which its resolve URL redirects to storage.
LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")
HUB_STATS = Counter()
HUB_STATS_LOCK = threading.Lock()


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".json": "application/json",
        ".gguf": "application/octet-stream",
        ".safetensors": "application/octet-stream",
    }

    def translate_path(self, path):
        clean = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, folder in MOUNTS.items():
            if clean.startswith(prefix):
                rest = clean[len(prefix):]
                # Resolve under the mount with the base class's sanitising.
                return super().translate_path("/" + rest).replace(WWW, folder, 1)
        return super().translate_path(path)

    def end_headers(self):
        # Always fresh: a rebuilt wasm must not be served from the cache, and a second hub load that makes no
        # request shows the page's Cache API at work, not the browser's HTTP cache.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_GET(self):
        if not self.hub(head=False):
            super().do_GET()

    def do_HEAD(self):
        if not self.hub(head=True):
            super().do_HEAD()

    def do_OPTIONS(self):
        # A CORS preflight (the page sends none today, but a Range or auth header would make one).
        self.send_response(204)
        self.hub_cors_headers()
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.end_headers()

    # -- the hub ------------------------------------------------------------------------------------------------

    def hub(self, head):
        """Answer /hub/, /hub-lfs/ and /hub-stats; False for any other path."""
        path = unquote(self.path.split("?", 1)[0].split("#", 1)[0])
        if path == "/hub-stats":
            with HUB_STATS_LOCK:
                body = json.dumps(dict(HUB_STATS), indent=1, sort_keys=True).encode()
            self.hub_reply(200, "application/json", body, head)
            return True
        for prefix, lfs in (("/hub/", False), ("/hub-lfs/", True)):
            if path.startswith(prefix):
                with HUB_STATS_LOCK:
                    HUB_STATS[path] += 1
                self.hub_file(path[len(prefix):], lfs, head)
                return True
        return False

    def hub_file(self, rest, lfs, head):
        parts = rest.split("/")
        if lfs:
            # /hub-lfs/<owner>/<name>/<file>: the storage URL the resolve URL redirected to.
            owner_name, revision, file_parts = parts[:2], "main", parts[2:]
        elif len(parts) >= 5 and parts[2] == "resolve":
            owner_name, revision, file_parts = parts[:2], parts[3], parts[4:]
        else:
            return self.hub_error(404, "Not Found", None, "Sorry, we can't find the page you are looking for.", head)
        repo = "/".join(owner_name)
        folder = HUB_REPOS.get(repo)
        if folder is None or not os.path.isdir(folder):
            return self.hub_error(401, "Unauthorized", "RepoNotFound", "Repository not found", head)
        if revision != "main":
            return self.hub_error(404, "Not Found", "RevisionNotFound", "Invalid rev id: " + revision, head)
        name = "/".join(file_parts)
        file = os.path.realpath(os.path.join(folder, name))
        inside = file.startswith(os.path.realpath(folder) + os.sep)
        if not name or not inside or not os.path.isfile(file):
            return self.hub_error(404, "Not Found", "EntryNotFound", "Entry not found", head)
        size = os.path.getsize(file)
        if not lfs and name.endswith(LFS_SUFFIXES):
            self.send_response(302, "Found")
            self.hub_cors_headers()
            self.send_header("Location", "/hub-lfs/" + quote(f"{repo}/{name}"))
            self.send_header("X-Linked-Size", str(size))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        ctype = "application/json" if name.endswith(".json") else "application/octet-stream"
        self.send_response(200, "OK")
        self.hub_cors_headers()
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if not head:
            with open(file, "rb") as f:
                try:
                    shutil.copyfileobj(f, self.wfile)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the page went away mid-download (a test closing its browser)
        return None

    def hub_cors_headers(self):
        # The real hub lets any page read its files and these headers; the test page runs on another origin.
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers",
                         "Content-Length, ETag, X-Error-Code, X-Error-Message, X-Linked-Size, Location")

    def hub_error(self, code, reason, error_code, message, head):
        body = message.encode()
        self.send_response(code, reason)
        self.hub_cors_headers()
        if error_code:
            self.send_header("X-Error-Code", error_code)
            self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return None

    def hub_reply(self, code, ctype, body, head):
        self.send_response(code)
        self.hub_cors_headers()
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_POST(self):
        self.send_error(405, "read-only server")

    do_PUT = do_DELETE = do_POST


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    handler = partial(Handler, directory=WWW)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(f"serving http://127.0.0.1:{port}/ (web/www; /fixtures/, /models/, hub at /hub/)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
