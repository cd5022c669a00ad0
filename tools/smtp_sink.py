"""A real SMTP server for the tests and benchmarks: aiosmtpd on a free loopback port.

    smtp_sink.py DIR [--quiet]

Prints its port on the first line of stdout, then accepts mail until killed. Each message
accepted is parsed with Python's standard MIME parser (`email`, policy `default`) and
written to DIR/NNNNNNNN.json: the envelope, every header, the content type and the text
and HTML parts. With --quiet it only counts (DIR/count, rewritten every 100 messages and
on exit), for benchmarks.

SMTP_SINK_TLS=starttls (STARTTLS required before MAIL) or implicit (TLS from the first byte),
with SMTP_SINK_CERT and SMTP_SINK_KEY (PEM files), serve TLS; each message then records
whether it came over TLS ("tls").

It offers PIPELINING (RFC 2920), as Postfix and Exim do (aiosmtpd reads pipelined commands
but does not say so); SMTP_SINK_PIPELINING=off does not. Each message records whether its
envelope came pipelined (its DATA already waiting when MAIL was read: "pipelined").

DIR/control.json, read at every command, tells it to misbehave:
    {"refuse": {"<address>": 550}}   refuse these recipients with that code
    {"defer": 451}                   defer every message at DATA with that code
    {"stall_seconds": 5}             wait this long before answering DATA
"""

import asyncio
import email
import email.policy
import json
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP


def control(directory):
    try:
        with open(os.path.join(directory, "control.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Recorder:
    def __init__(self, directory, quiet):
        self.directory = directory
        self.quiet = quiet
        # Started again on the same directory, it goes on numbering after what it wrote.
        self.count = sum(1 for name in os.listdir(directory) if name[:1].isdigit() and name.endswith(".json"))

    def save_count(self):
        with open(os.path.join(self.directory, "count.tmp"), "w") as f:
            f.write(str(self.count))
        os.replace(os.path.join(self.directory, "count.tmp"), os.path.join(self.directory, "count"))

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if os.environ.get("SMTP_SINK_PIPELINING") != "off":
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # What the client sent after MAIL without waiting for its reply.
        waiting = bytes(getattr(server._reader, "_buffer", b""))
        envelope.pipelined = b"DATA" in waiting
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        code = control(self.directory).get("refuse", {}).get(address)
        if code:
            return f"{code} 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        rules = control(self.directory)
        stall = rules.get("stall_seconds")
        if stall:
            await asyncio.sleep(stall)
        if rules.get("defer"):
            return f"{rules['defer']} 4.3.0 try again later"
        self.count += 1
        if self.quiet:
            if self.count % 100 == 0:
                self.save_count()
            return "250 OK"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "pipelined": getattr(envelope, "pipelined", False),
            "content_type": message.get_content_type(),
            "headers": {name.lower(): str(value) for name, value in message.items()},
            "text": text.get_content() if text else None,
            "html": html.get_content() if html else None,
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
        }
        path = os.path.join(self.directory, f"{self.count:08d}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
        return "250 OK"


async def main():
    directory = sys.argv[1]
    quiet = "--quiet" in sys.argv
    os.makedirs(directory, exist_ok=True)
    recorder = Recorder(directory, quiet)
    loop = asyncio.get_running_loop()
    mode = os.environ.get("SMTP_SINK_TLS", "")
    context = None
    if mode:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(os.environ["SMTP_SINK_CERT"], os.environ["SMTP_SINK_KEY"])
    starttls = {"tls_context": context, "require_starttls": True} if mode == "starttls" else {}
    server = await loop.create_server(
        lambda: SMTP(recorder, hostname="sink.test", data_size_limit=10_000_000, **starttls),
        host="127.0.0.1",
        port=int(os.environ.get("SMTP_SINK_PORT", "0")),
        ssl=context if mode == "implicit" else None,
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    recorder.save_count()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
