"""Runs moto's DynamoDB-compatible server handling one request at a time.

moto's own ``moto_server`` serves each request on a new thread, and its DynamoDB backend does not
lock around conditional writes: two concurrent ``UpdateItem`` calls with the same condition can
both succeed, which real DynamoDB never allows. Our lease protocol relies on that atomicity, so the
test endpoint serialises requests instead. Usage: ``python moto_serial.py HOST PORT``.
"""

import os
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.moto_server.werkzeug_app import create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    os.environ.setdefault("MOTO_PORT", str(port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
