"""A host's webhook receiver, verifying each delivery with the reference Standard Webhooks
library (`standardwebhooks` from PyPI) rather than topupd's own code.

    python standard_webhooks.py SECRETS_FILE LOG_FILE

Prints the port it listens on (loopback), then serves until killed. Each POST is verified
against every secret in SECRETS_FILE (one per line, read on each request), and a line is
appended to LOG_FILE: the webhook-id, whether each secret verified it, and the payload.
It answers 204 when a secret verified it, 400 otherwise.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

secrets_file, log_file = sys.argv[1], sys.argv[2]


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k: v for k, v in self.headers.items()}
        with open(secrets_file) as f:
            secrets = [line.strip() for line in f if line.strip()]
        verified, payload = [], None
        for secret in secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
                verified.append(True)
            except WebhookVerificationError:
                verified.append(False)
        with open(log_file, "a") as log:
            log.write(json.dumps({"id": headers.get("webhook-id"), "verified": verified,
                                  "payload": payload}) + "\n")
        self.send_response(204 if any(verified) else 400)
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Receiver)
print(server.server_address[1], flush=True)
server.serve_forever()
