"""A real SMTP server for the test suite, on aiosmtpd.

Usage: smtp_sink.py PORT FOLDER

Accepts every message into FOLDER as NNNNNN.eml, in arrival order. Recipients whose local
part starts with "reject-permanent" are refused with 550, "reject-temporary" with 451.
Prints "ready" once listening, then serves until killed.
"""

import itertools
import pathlib
import sys
import threading

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.numbers = itertools.count()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("reject-permanent"):
            return "550 5.1.1 mailbox unavailable"
        if local.startswith("reject-temporary"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        number = next(self.numbers)
        partial = self.folder / f".{number:06d}.partial"
        partial.write_bytes(envelope.content)
        partial.rename(self.folder / f"{number:06d}.eml")
        return "250 Message accepted for delivery"


def main():
    port, folder = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(Sink(folder), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


main()
