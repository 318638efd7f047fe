"""The demo: a local token issuer and the FastAPI example, both on 127.0.0.1, no outside service.

    bash dev.sh demo            # serve until Ctrl-C and print curl commands to try
    bash dev.sh demo --check    # make those requests itself, print the answers, and exit

The issuer (from ``jwt_middleware.testing``) holds an RSA signing key and serves OIDC discovery
and its JWKS over HTTP; the API finds the keys through discovery, exactly as it would with a
real identity provider.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from jwt_middleware.testing import LocalIssuer

HERE = Path(__file__).resolve().parent
AUDIENCE = "api://demo"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8000, help="API port (default 8000; 0 = any)")
    parser.add_argument("--app", default="fastapi_app", choices=["fastapi_app", "starlette_app"])
    parser.add_argument("--check", action="store_true", help="run the requests, then exit")
    args = parser.parse_args()

    issuer = LocalIssuer(audience=AUDIENCE).start()
    os.environ["JWT_ISSUER"] = issuer.issuer
    os.environ["JWT_AUDIENCE"] = AUDIENCE
    os.environ.pop("JWT_JWKS_URL", None)  # use OIDC discovery
    sys.path.insert(0, str(HERE))

    config = uvicorn.Config(
        f"{args.app}:app", host="127.0.0.1", port=args.port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            print("the API did not start (is the port free? try --port 0)", file=sys.stderr)
            issuer.stop()
            return 1
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    api = f"http://127.0.0.1:{port}"

    user = issuer.mint(subject="alice", scope="read", expires_in=3600)
    admin = issuer.mint(subject="root", scope="read admin", expires_in=3600)
    cases = [
        ("a valid token", "/me", user, 200),
        ("no token", "/me", None, 401),
        ("a token without the admin scope", "/admin", user, 403),
        ("an admin token", "/admin", admin, 200),
    ]
    print(f"Issuer  {issuer.issuer}  (discovery: {issuer.discovery_url})")
    print(f"API     {api}  ({args.app}, audience {AUDIENCE})\n")
    failures = 0
    try:
        for label, path, token, expected in cases:
            command = ["curl", "-i", f"{api}{path}"]
            if token is not None:
                command[2:2] = ["-H", f"Authorization: Bearer {token}"]
            print(f"# {label} -> expect {expected}")
            print(shlex.join(command))
            if args.check:
                headers = {"authorization": f"Bearer {token}"} if token else {}
                answer = httpx.get(f"{api}{path}", headers=headers, timeout=10)
                challenge = answer.headers.get("www-authenticate", "")
                print(f"  -> {answer.status_code} {challenge}".rstrip())
                failures += answer.status_code != expected
            print()
        if not args.check:
            print("Serving; press Ctrl-C to stop.")
            thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        issuer.stop()
    if args.check:
        verdict = f"{failures} unexpected" if failures else "all answers as expected"
        print("demo check:", verdict)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
