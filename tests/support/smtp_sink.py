#!/usr/bin/env python3
"""An SMTP server on loopback for the mail tests (tests/api/mail.rs).

    python3 tests/support/smtp_sink.py PORT DIR [--reject]

Listens on 127.0.0.1:PORT (aiosmtpd) and writes every message it accepts to DIR as one file,
NNNNNN.eml, written under another name first and renamed, so a reader never sees half of one.
The file starts with `X-Envelope-From:` and `X-Envelope-To:` lines, then the message as received.
Beside it, NNNNNN.json holds the message decoded (Python's email parser): {"to", "subject",
"text", "html"}, with the transfer encodings and encoded words undone.
With --reject, every recipient is refused with 550, so the client sees the server's error.
Prints READY once it accepts connections; exits on SIGTERM/SIGINT or when stdin closes (the test
that started it is gone).
"""

import email
import email.policy
import itertools
import json
import os
import signal
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory, reject):
        self.directory = directory
        self.reject = reject
        self.counter = itertools.count(1)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject:
            return "550 5.1.1 <%s>: mailbox unavailable (test rejection)" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        head = "X-Envelope-From: %s\r\nX-Envelope-To: %s\r\n" % (
            envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
        )
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.write(n, "json", json.dumps(decoded(data, envelope.rcpt_tos)).encode("utf-8"))
        self.write(n, "eml", head.encode("ascii") + data)
        return "250 Message accepted for delivery"

    def write(self, n, extension, data):
        tmp = os.path.join(self.directory, ".%06d.%s.tmp" % (n, extension))
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(self.directory, "%06d.%s" % (n, extension)))


def decoded(data, recipients):
    message = email.message_from_bytes(data, policy=email.policy.default)
    parts = {"to": ", ".join(recipients), "subject": str(message["subject"] or "")}
    for kind in ("plain", "html"):
        part = message.get_body(preferencelist=(kind,))
        parts["text" if kind == "plain" else "html"] = part.get_content() if part else None
    return parts


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    port, directory = int(sys.argv[1]), sys.argv[2]
    reject = "--reject" in sys.argv[3:]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Sink(directory, reject), hostname="127.0.0.1", port=port)
    controller.start()
    print("READY", flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())

    def watch_stdin():
        try:
            while sys.stdin.read(1024):
                pass
        finally:
            done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
