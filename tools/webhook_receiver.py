#!/usr/bin/env python3
"""A webhook endpoint that checks Crier's deliveries with its own Standard Webhooks
verifier (Python standard library only), for tests and for trying webhooks out.

    tools/webhook_receiver.py [--port 0] [--secret whsec_...] [--fail-first] [--status 410]
                              [--delay 3]

It prints `listening on http://127.0.0.1:<port>/`, then one JSON line per request:
`{"id", "timestamp", "verified", "why", "answered", "received_at", "event"}`.

- The secret may also be given after start, as the body of `POST /__secret` (a test
  registers the webhook, with the receiver's URL, before it learns the secret).
- `--fail-first` answers 503 with `Retry-After: 1` to the first attempt of every
  `webhook-id`, and 204 to the next ones.
- `--status N` answers N to everything; `--delay S` waits S seconds before answering.

Verification follows https://www.standardwebhooks.com: the key is the base64 after
`whsec_`; the signed content is `<webhook-id>.<webhook-timestamp>.<body>`; the header holds
space-separated `v1,<base64 HMAC-SHA256>` signatures, any of which may match; the timestamp
must be within five minutes of now.
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 5 * 60


def verify(secret, message_id, timestamp, body, signature_header):
    """Returns (verified, why)."""
    if not secret:
        return False, "no secret given"
    if not (message_id and timestamp and signature_header):
        return False, "a webhook-* header is missing"
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False, "webhook-timestamp is not an integer"
    if abs(time.time() - sent_at) > TOLERANCE_SECONDS:
        return False, "webhook-timestamp is too far from now"
    key = base64.b64decode(secret[len("whsec_"):] if secret.startswith("whsec_") else secret)
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signature_header.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True, None
    return False, "no v1 signature matches"


class State:
    def __init__(self, args):
        self.args = args
        self.secret = args.secret
        self.seen = set()
        self.lock = threading.Lock()


def handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, status, headers=()):
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/__secret":
                with state.lock:
                    state.secret = body.decode().strip()
                self.answer(204)
                return
            message_id = self.headers.get("webhook-id")
            verified, why = verify(
                state.secret,
                message_id,
                self.headers.get("webhook-timestamp"),
                body,
                self.headers.get("webhook-signature"),
            )
            if state.args.delay:
                time.sleep(state.args.delay)
            headers = []
            with state.lock:
                first = message_id not in state.seen
                state.seen.add(message_id)
                if state.args.status:
                    status = state.args.status
                elif state.args.fail_first and first:
                    status, headers = 503, [("Retry-After", "1")]
                else:
                    status = 204
                try:
                    event = json.loads(body)
                except ValueError:
                    event = None
                line = {
                    "id": message_id,
                    "timestamp": self.headers.get("webhook-timestamp"),
                    "verified": verified,
                    "why": why,
                    "answered": status,
                    "received_at": time.time(),
                    "content_type": self.headers.get("Content-Type"),
                    "event": event,
                }
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
            self.answer(status, headers)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret")
    parser.add_argument("--fail-first", action="store_true")
    parser.add_argument("--status", type=int)
    parser.add_argument("--delay", type=float, default=0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(State(args)))
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
