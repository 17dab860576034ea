"""moto's DynamoDB server with one request at a time.

`moto_server` serves requests on many threads, and moto's DynamoDB backend
evaluates a condition expression and applies the write as two steps without
a lock, so two concurrent conditional writes can both succeed (two owners of
one lock, two APPLIED entries). Real DynamoDB makes every conditional write
and every TransactWriteItems atomic. This wrapper keeps moto's own app and
request handler and only serialises requests (keep-alive still works), which
restores that atomicity for the Flamingock test suites.

Usage: python moto_serialized.py -H 127.0.0.1 -p PORT   (same flags as moto_server)
"""

import argparse
import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


class Serialized:
    """WSGI middleware: one request inside moto at a time."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            # Materialise the body while holding the lock: moto builds it eagerly,
            # but a lazy iterable must not escape the critical section.
            return list(self.app(environ, start_response))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        Serialized(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
