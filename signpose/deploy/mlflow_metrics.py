"""The MLflow server's Prometheus metrics on a port of their own (the chart's ``metrics`` sidecar).

``mlflow server --expose-prometheus DIR`` makes every uvicorn worker write its request metrics to
files in DIR (prometheus_client's multiprocess mode) and serves them at ``/metrics``. With the
basic-auth app on, that route is fail-closed: only an admin may read it, so a scraper would need the
admin password. This process reads the same files from the shared volume and serves the merged
metrics (request counts, latencies, exceptions, the MLflow version: no experiment or model data) at
``http://<pod>:PORT/metrics`` without credentials, which is what a ServiceMonitor scrapes.

    python -m signpose.deploy.mlflow_metrics --dir /tmp/prometheus --port 9464
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


class MultiprocessDirectory:
    """A collector over the ``*.db`` files in ``path``, read at every scrape (workers come and go,
    the directory may not exist before the server first starts)."""

    def __init__(self, path: str):
        self.path = path

    def collect(self):
        from prometheus_client.multiprocess import MultiProcessCollector

        files = sorted(glob.glob(os.path.join(self.path, "*.db")))
        return MultiProcessCollector.merge(files, accumulate=True)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # one line per scrape would drown the pod's log
        pass


def make_app(path: str):
    from prometheus_client import CollectorRegistry, make_wsgi_app

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MultiprocessDirectory(path))
    return make_wsgi_app(registry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m signpose.deploy.mlflow_metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, help="the directory given to mlflow server --expose-prometheus")
    parser.add_argument("--port", type=int, default=9464)
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, make_app(args.dir), handler_class=_QuietHandler)
    print(f"serving the metrics in {args.dir} on http://{args.host}:{args.port}/metrics", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
