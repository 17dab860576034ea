"""moto's server (`moto_server`, same arguments) handling one request at a time.

moto's DynamoDB backend has no locking, and its threaded server runs requests
concurrently, which breaks what real DynamoDB guarantees:

* TransactWriteItems deep-copies every table it touches before applying the
  items; a concurrent write to the same table makes that copy fail with
  "RuntimeError: dictionary changed size during iteration", answered as an
  HTTP 500 with an HTML body.
* A cancelled TransactWriteItems restores that copy over the whole table,
  undoing writes that other requests made to the table in the meantime
  (lost updates).
* Condition checks and the writes they guard are not atomic with respect to
  other requests.

Serialising the requests (one lock around the WSGI application, held until the
response body is complete) makes every request atomic and linearizable, as
DynamoDB's single-item operations and transactions are. Connections are still
served by their own threads, so HTTP keep-alive works as with moto_server.
"""

import sys
import threading

import moto.server

_lock = threading.Lock()
_run_simple = moto.server.run_simple


def _serialized(app):
    def application(environ, start_response):
        with _lock:
            result = app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()

    return application


def _run_simple_serialized(hostname, port, application, *args, **kwargs):
    return _run_simple(hostname, port, _serialized(application), *args, **kwargs)


moto.server.run_simple = _run_simple_serialized

if __name__ == "__main__":
    sys.exit(moto.server.main())
