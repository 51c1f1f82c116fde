"""`dealflow-token`: mint a development bearer token with the shared HS256 secret.

DEALFLOW_JWT_SECRET=… dealflow-token --sub alice --roles rep --teams emea
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from dealflow_common.auth import Role, mint_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dealflow-token", description=__doc__.splitlines()[0])
    parser.add_argument("--sub", default="dev-user", help="user id (the actor in history)")
    parser.add_argument(
        "--roles",
        default="rep",
        help=f"comma-separated, any of {', '.join(r.value for r in Role)}",
    )
    parser.add_argument("--teams", default="", help="comma-separated team ids")
    parser.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds")
    parser.add_argument(
        "--secret-file",
        help="read the secret from this file (`make run` keeps it in "
        "data/secrets/dealflow_jwt_secret)",
    )
    args = parser.parse_args(argv)

    secret = os.environ.get("DEALFLOW_JWT_SECRET")
    if args.secret_file:
        with open(args.secret_file, encoding="utf-8") as f:
            secret = f.read().strip()
    if not secret:
        print("set DEALFLOW_JWT_SECRET or pass --secret-file", file=sys.stderr)
        return 2
    roles = [r for r in args.roles.split(",") if r]
    unknown = [r for r in roles if r not in {role.value for role in Role}]
    if unknown:
        print(f"unknown role(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    teams = [t for t in args.teams.split(",") if t]
    print(
        mint_token(
            secret,
            sub=args.sub,
            roles=roles,
            teams=teams,
            ttl_seconds=args.ttl,
            now=int(time.time()),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
