#!/usr/bin/env python3
"""Fuzz a running Crier from its own OpenAPI document: schemathesis reads `/openapi.json` and sends
generated requests, valid and invalid, to every operation, once per role, then stateful
sequences that follow the documented links (create, then read, update, delete).

    tools/fuzz.py [--crier target/release/crier] [--examples 25] [--seed 1]
                  [--database-url postgres://postgres@127.0.0.1:5432/crier_fuzz]

It starts `crier serve` on a fresh database (made by crier, dropped at the end unless
`--database-url` names one), creates a key of every role through the API, and runs
schemathesis (pinned in tools/fuzz-requirements.txt, installed into a virtualenv under
target/ on first use) with every check. It exits 0 only when no answer was a 5xx, none broke
its documented schema, status code, content type or headers, and no invalid request was
accepted. schemathesis's report for each role is left in target/fuzz/<role>/.

`GET /v1/stream` is left out: it never ends, and tests/end_to_end/stream.rs covers it.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
REQUIREMENTS = ROOT / "tools" / "fuzz-requirements.txt"
BOOTSTRAP_SECRET = "crier-fuzz-Bootstrap-Admin-Key-5Kd8Rt3Wz"
SERVER = "postgres://postgres@127.0.0.1:5432"


def schemathesis() -> list[str]:
    """The command that runs the pinned schemathesis, installing it into target/ when it is
    not there yet. The virtualenv is built aside and renamed into place, so that two runs
    never see half of one; it is run through its `python`, which still works after the
    rename (its scripts' first lines name the old path)."""
    venv = TARGET / "fuzz-venv"
    pinned = REQUIREMENTS.read_text()
    stamp = venv / "requirements.txt"
    if stamp.exists() and stamp.read_text() == pinned:
        return [str(venv / "bin" / "python"), "-m", "schemathesis.cli"]
    TARGET.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="fuzz-venv.", dir=TARGET))
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
    subprocess.run(
        [str(building / "bin" / "pip"), "install", "--quiet", "-r", str(REQUIREMENTS)],
        check=True,
    )
    (building / stamp.name).write_text(pinned)
    shutil.rmtree(venv, ignore_errors=True)
    try:
        building.rename(venv)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)  # another run won the race
    return [str(venv / "bin" / "python"), "-m", "schemathesis.cli"]


def request(base: str, method: str, path: str, key: str, body=None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(base + path, data=data, headers=headers, method=method),
            timeout=10,
        ) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        sys.exit(f"seeding: {method} {path} answered {error.code}: {error.read().decode()}")


def wait_until_ready(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"crier serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("crier serve did not become ready within 60 s")


def start_server(crier: str, database_url: str) -> tuple[subprocess.Popen, str]:
    env = dict(
        os.environ,
        DATABASE_URL=database_url,
        CRIER_LISTEN="127.0.0.1:0",
        CRIER_BOOTSTRAP_ADMIN_KEY=BOOTSTRAP_SECRET,
        # Rate limits would turn most generated requests into 429s and hide the handlers.
        CRIER_WRITE_RATE_LIMIT="0",
        CRIER_AUTH_FAILURE_LIMIT="0",
        CRIER_SUBSCRIBE_RATE_LIMIT="0",
        # Subscriptions are taken; their confirmations go to a port that refuses them.
        CRIER_SMTP_URL="smtp://127.0.0.1:9",
        # Generated webhook URLs must be refused for their address, never called.
        CRIER_WEBHOOK_ALLOW_PRIVATE="false",
        RUST_LOG=os.environ.get("RUST_LOG", "warn"),
    )
    server = subprocess.Popen(
        [crier, "serve"], env=env, stdout=subprocess.PIPE, stderr=sys.stderr, text=True
    )
    line = server.stdout.readline() if server.stdout else ""
    if "listening on " not in line:
        server.kill()
        sys.exit(f"crier serve did not start: {line!r}")
    base = line.split("listening on ", 1)[1].strip()
    wait_until_ready(base, server)
    return server, base


def seed(base: str) -> dict[str, str]:
    """A key of every role, a service and a resolved incident, so that generated requests
    have something real to hit besides unknown ids."""
    keys = {"admin": BOOTSTRAP_SECRET}
    for role in ("publisher", "auditor", "reader"):
        keys[role] = request(base, "POST", "/v1/api-keys", BOOTSTRAP_SECRET,
                             {"name": f"fuzz {role}", "role": role})["key"]
    keys["tenant-reader"] = request(
        base, "POST", "/v1/api-keys", BOOTSTRAP_SECRET,
        {"name": "fuzz tenant reader", "role": "reader", "tenant": "fuzz-tenant"},
    )["key"]
    service = request(base, "POST", "/v1/services", BOOTSTRAP_SECRET, {"name": "Teams"})
    incident = request(base, "POST", "/v1/incidents", keys["publisher"], {
        "title": "Users cannot sign in", "impact": "major", "message": "Investigating.",
        "affected_services": [{"service_id": service["id"], "status": "major_outage"}],
    })
    request(base, "POST", f"/v1/incidents/{incident['id']}/updates", keys["publisher"], {
        "status": "resolved", "message": "Restart your clients.",
        "client_action": {"kind": "restart_client", "message": "Restart your clients."},
    })
    return keys


def fuzz(tool: list[str], base: str, role: str, key: str | None, args) -> bool:
    report = TARGET / "fuzz" / role
    shutil.rmtree(report, ignore_errors=True)
    command = [
        *tool, "--config-file", str(ROOT / "tools" / "schemathesis.toml"), "--no-color", "run", f"{base}/openapi.json",
        "--checks", "all",
        # DELETE retires a service, revokes a key or deletes a webhook without erasing it:
        # the resource stays readable with its end recorded (`retired_at`, `revoked_at`,
        # `status: deleted`), as history does, which this check calls a use after free.
        "--exclude-checks", "use_after_free",
        "--max-examples", str(args.examples),
        "--seed", str(args.seed),
        "--exclude-path", "/v1/stream",
        "--request-timeout", "30",
        "--workers", "1",
        "--report", "junit",
        "--report-dir", str(report),
    ]
    if key is not None:
        command += ["--header", f"Authorization: Bearer {key}"]
    print(f"== fuzzing as {role}", flush=True)
    # schemathesis keeps a cache in its working directory: keep it with the report.
    report.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, cwd=report).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crier", default=str(TARGET / "release" / "crier"))
    parser.add_argument("--examples", type=int, default=25,
                        help="most generated cases per operation and phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url",
                        help="use this database as it is (default: a fresh one, dropped after)")
    parser.add_argument("--roles", default="anonymous,reader,tenant-reader,auditor,publisher,admin")
    args = parser.parse_args()

    tool = schemathesis()
    fresh = args.database_url is None
    database = f"crier_test_fuzz_{uuid.uuid4().hex[:12]}"
    database_url = args.database_url or f"{SERVER}/{database}"
    server, base = start_server(args.crier, database_url)
    failed = []
    try:
        keys = seed(base)
        for role in args.roles.split(","):
            if not fuzz(tool, base, role, keys.get(role), args):
                failed.append(role)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if fresh:
            subprocess.run(["psql", f"{SERVER}/postgres", "-qc",
                            f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'], check=False)
    if failed:
        print(f"schemathesis found problems as: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("schemathesis found no problem as any role")
    return 0


if __name__ == "__main__":
    sys.exit(main())
