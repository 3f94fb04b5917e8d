"""Static server for the web page: web/www at /, tests/data/fixtures at
/fixtures/ and models/cache at /models/ (read-only: GET and HEAD only), on
127.0.0.1. Usage: python3 web/serve.py [PORT]"""

import http.server
import os
import sys
from functools import partial

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOUNTS = {
    "/fixtures/": os.path.join(ROOT, "tests", "data", "fixtures"),
    "/models/": os.path.join(ROOT, "models", "cache"),
}
WWW = os.path.join(ROOT, "web", "www")


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
        # Always fresh: a rebuilt wasm must not be served from the cache.
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def do_POST(self):
        self.send_error(405, "read-only server")

    do_PUT = do_DELETE = do_POST


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    handler = partial(Handler, directory=WWW)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    print(f"serving http://127.0.0.1:{port}/ (web/www; /fixtures/, /models/)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
