"""Token-auth figures: what the Bearer flow costs the registry client against a real token-auth registry.

Starts Debian's docker-registry with `auth: token` and the test token server (tests/fixtures/registry_fixtures.py)
on free loopback ports with TLS, then prints the time of a credential check, of the first manifest read of a
repository (which fetches its token), of N further reads (the cached token), and how many tokens were issued.

    .venv/bin/python bench/bench_token_auth.py [--reads 100]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from registry_fixtures import Policy, TokenRegistry  # noqa: E402

from tfship.registry import RegistryClient  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=100)
    args = parser.parse_args()
    password = secrets.token_hex(16)
    policy = Policy(users={"bench": password})
    with tempfile.TemporaryDirectory(prefix="tfship-bench-token-") as folder, \
            TokenRegistry(Path(folder), policy) as started:
        client = RegistryClient(started.info(), ("bench", password))
        began = time.monotonic()
        client.check()
        check = time.monotonic() - began
        began = time.monotonic()
        client.manifest_digest("tfship/bench", "latest")
        first = time.monotonic() - began
        reads = []
        for _ in range(args.reads):
            began = time.monotonic()
            client.manifest_digest("tfship/bench", "latest")
            reads.append(time.monotonic() - began)
    print(f"credential check (GET /v2/, 401, token, GET /v2/): {check * 1000:.1f} ms")
    print(f"first manifest read of a repository (401, token for its scope, HEAD): {first * 1000:.1f} ms")
    print(f"{args.reads} further reads with the cached token: median {statistics.median(reads) * 1000:.1f} ms, "
          f"max {max(reads) * 1000:.1f} ms")
    print(f"tokens issued: {policy.issued} (one per scope: the check's and the repository's)")


if __name__ == "__main__":
    main()
