#!/usr/bin/env python3
"""Recompute Crier's hash chain from an export, with the Python standard library only.

    crier export > history.ndjson          # or GET /v1/audit/export
    python3 tools/verify_export.py history.ndjson [--checkpoint checkpoint.json]
                                                  [--history-key KEYFILE]

An auditor's own implementation of docs/EVENT-STORE.md, "The hash chain", written from
that description alone: it shares no code with Crier. Each line is a CloudEvent; the
event's metadata is rebuilt from the extension attributes `actor`,
`requestid`, `correlationid`, `causationid` (absent means null), its JSON is put in RFC 8785
(JCS) form, and every link is recomputed. With --checkpoint, the export must also hold the
checkpoint's position with the checkpoint's hash (check its signature separately, e.g. with
openssl; see docs/EVENT-STORE.md, "Signed checkpoints"). With --history-key (the key file
the server appends with), every event's `authenticator` is checked too (docs/EVENT-STORE.md,
"Authenticated events"): from the first authenticated event on, every event must carry a
valid one; events before it were written before a key was set.

Prints "ok: N events; head P HASH" and exits 0, or names the first bad position and exits 1.
"""

import base64
import hashlib
import hmac
import json
import struct
import sys
import uuid


def jcs_number(value):
    if isinstance(value, bool):
        raise ValueError("not a number")
    if isinstance(value, int):
        if abs(value) <= 2**53 - 1:
            return str(value)
        # RFC 8785 numbers are doubles: a larger integer is written as its double is
        # (PostgreSQL prints 1e16 as 10000000000000000).
        value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("NaN and infinities have no JSON form")
    if value == 0:
        return "0"
    # Shortest round-trip digits (as ECMAScript), then ECMAScript's layout of them.
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0)  # digits before the decimal point
    point -= len(whole + fraction) - len((whole + fraction).lstrip("0"))
    digits = digits.rstrip("0") or "0"
    n, k = point, len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    exp = n - 1
    mant = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mant}e{'+' if exp > 0 else '-'}{abs(exp)}"


def jcs(value):
    """RFC 8785 canonical JSON text of a value parsed by json.loads."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return jcs_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: key.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(value[k]) for k in keys) + "}"
    raise ValueError(f"not JSON: {value!r}")


def lp(data):
    return struct.pack(">I", len(data)) + data


def content_hash(event):
    metadata = {
        "actor": event.get("actor"),
        "request_id": event.get("requestid"),
        "correlation_id": event.get("correlationid"),
        "causation_id": event.get("causationid"),
    }
    return hashlib.sha256(
        b"crier.content.v1\x00"
        + uuid.UUID(event["id"]).bytes
        + lp(event["type"].encode())
        + struct.pack(">I", event["schemaversion"])
        + lp(jcs(event["data"]).encode())
        + lp(jcs(metadata).encode())
    ).digest()


def link(prev, event):
    return hashlib.sha256(
        prev
        + b"crier.link.v1\x00"
        + struct.pack(">Q", event["position"])
        + lp(event["subject"].encode())
        + struct.pack(">Q", event["streamversion"])
        + lp(event["time"].encode())
        + content_hash(event)
    ).digest()


def history_keys(path):
    """The keys of a history key file, by their 8-byte id."""
    keys = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key = base64.b64decode(line + "=" * (-len(line) % 4))
        keys[hashlib.sha256(b"crier.history-key-id\x00" + key).digest()[:8]] = key
    return keys


def authentic(keys, event):
    """None when the event carries a valid authenticator, else what is wrong."""
    given = event.get("authenticator")
    if given is None:
        return "missing"
    given = bytes.fromhex(given)
    key = keys.get(given[:8])
    if key is None:
        return f"made by history key {given[:8].hex()}, which was not given"
    message = b"crier.auth.v1\x00" + lp(event["subject"].encode()) + content_hash(event)
    expected = hmac.new(key, message, hashlib.sha256).digest()
    return None if hmac.compare_digest(given[8:], expected) else "not its own (forged or changed)"


def main(argv):
    paths = [a for a in argv if not a.startswith("--")]
    checkpoint, keys = None, None
    if "--checkpoint" in argv:
        checkpoint = json.load(open(argv[argv.index("--checkpoint") + 1]))
        paths.remove(argv[argv.index("--checkpoint") + 1])
    if "--history-key" in argv:
        keys = history_keys(argv[argv.index("--history-key") + 1])
        paths.remove(argv[argv.index("--history-key") + 1])
    authenticated, unauthenticated = 0, 0
    source = open(paths[0], encoding="utf-8") if paths else sys.stdin
    prev, position, count, seen_checkpoint = None, None, 0, False
    for number, line in enumerate(source, 1):
        event = json.loads(line)
        if event.get("specversion") != "1.0":
            print(f"BAD line {number}: not a CloudEvents 1.0 event")
            return 1
        if prev is None:
            # The first line: at position 1 the chain starts from 32 zero bytes; an export
            # that starts later builds on the link it names (check that one elsewhere).
            prev, position = bytes.fromhex(event["prevhash"]), event["position"] - 1
            if position == 0 and prev != bytes(32):
                print("BAD at position 1: prevhash is not 32 zero bytes")
                return 1
        at = event["position"]
        if at != position + 1:
            print(f"BAD at position {position + 1}: missing (next is {at})")
            return 1
        if bytes.fromhex(event["prevhash"]) != prev:
            print(f"BAD at position {at}: prevhash is not the previous link")
            return 1
        recomputed = link(prev, event)
        if recomputed.hex() != event["hash"]:
            print(f"BAD at position {at}: the event does not give its hash")
            return 1
        if keys is not None:
            problem = authentic(keys, event)
            if problem is None:
                authenticated += 1
            elif problem == "missing" and authenticated == 0:
                unauthenticated += 1
            else:
                print(f"BAD at position {at}: its authenticator is {problem}")
                return 1
        if checkpoint and at == checkpoint["position"]:
            if recomputed.hex() != checkpoint["hash"]:
                print(f"BAD at position {at}: not the link the checkpoint signed")
                return 1
            seen_checkpoint = True
        prev, position, count = recomputed, at, count + 1
    if checkpoint and not seen_checkpoint:
        print(f"BAD: the export does not reach the checkpoint's position {checkpoint['position']}")
        return 1
    print(f"ok: {count} events; head {position} {prev.hex() if prev else ''}")
    if keys is not None:
        print(f"{authenticated} authenticated; {unauthenticated} written before a key was set")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
