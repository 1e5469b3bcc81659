"""`galaxalign serve`: the search HTTP API (OpenAPI docs at /docs) and web page at /.

With no --index, serves the demo: the survey and checkpoint of runs/demo/report.json, embedded and
indexed once into runs/demo/search/.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", default=None, help="index folder, or milvus://URI#COLLECTION "
                   "(default: build/serve the `make demo` one)")
    p.add_argument("--checkpoint", default=None, help="model (default: the one recorded in index.json)")
    p.add_argument("--host", default="127.0.0.1")
    from galaxalign.cli.arguments import tcp_port

    p.add_argument("--port", type=tcp_port, default=8000, help="TCP port, 0 to 65535 (default 8000)")
    p.add_argument("--demo-dir", default=None, help="where `make demo` wrote report.json (default runs/demo)")


def run(args) -> int:
    from galaxalign.serve.app import create_app
    from galaxalign.serve.server import listen, serve

    # The port first: one that is taken (or a host that is not this machine's) fails in one line
    # before the index is read and the model warmed up.
    sock = listen(args.host, args.port)
    index_dir, checkpoint = args.index, args.checkpoint
    if index_dir is None:
        from galaxalign.runtime import DEMO_DIR
        from galaxalign.search.demo_index import ensure_demo_index

        index_dir, demo_checkpoint = ensure_demo_index(args.demo_dir or DEMO_DIR)
        checkpoint = checkpoint or demo_checkpoint
    app = create_app(index_dir, checkpoint)
    if app.state.searcher.checkpoint:
        app.state.searcher.warm_up()  # load now: a bad checkpoint fails here in one line, and the first query is fast
    port = sock.getsockname()[1]
    print(f"serving {index_dir} on http://{args.host}:{port}/ (API docs at /docs)", flush=True)
    serve(app, host=args.host, port=port, sock=sock)
    return 0
