#!/usr/bin/env python3
"""An SMTP server on loopback for the mail tests (tests/api/mail.rs).

    python3 tests/support/smtp_sink.py PORT DIR [--reject]

Listens on 127.0.0.1:PORT (aiosmtpd) and writes every message it accepts to DIR as one file,
NNNNNN.eml, written under another name first and renamed, so a reader never sees half of one.
The file starts with `X-Envelope-From:` and `X-Envelope-To:` lines, then the message as received.
With --reject, every recipient is refused with 550, so the client sees the server's error.
Prints READY once it accepts connections; exits on SIGTERM/SIGINT or when stdin closes (the test
that started it is gone).
"""

import asyncio
import itertools
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
        tmp = os.path.join(self.directory, ".%06d.tmp" % n)
        with open(tmp, "wb") as f:
            f.write(head.encode("ascii") + data)
        os.rename(tmp, os.path.join(self.directory, "%06d.eml" % n))
        return "250 Message accepted for delivery"


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
