"""``vidtune serve``: a local web page over an index and runs (search, runs, timelines) and its JSON API."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

from rich.markup import escape

from vidtune.cli.common import device_arg, finite_float, output_args
from vidtune.cli.console import err, print_json
from vidtune.errors import VidtuneError


def resolve(host: str, port: int) -> tuple:
    """``(family, address)`` to listen on for ``--host``, or a clear error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise VidtuneError(f"--host {host}: not an address this machine can listen on ({why})") from None
    family, _, _, _, addr = infos[0]
    return family, addr


def pick_token(args, loopback: bool) -> str | None:
    """The token every request must carry: ``--token TOKEN`` (or $VIDTUNE_SERVE_TOKEN), a generated one for
    ``--token`` alone, none on loopback without one; off loopback a token is required (exit 2 without)."""
    from vidtune.serve.auth import check_token, new_token

    token = args.token
    if token is None and os.environ.get("VIDTUNE_SERVE_TOKEN"):
        token = os.environ["VIDTUNE_SERVE_TOKEN"]
    if token == GENERATE:
        return new_token()
    if token is None:
        if loopback:
            return None
        raise VidtuneError(f"--host {args.host} lets other machines reach this server: it needs a token. Give "
                           "--token (a generated one is printed in the URL), --token TOKEN (16+ characters; or set "
                           "VIDTUNE_SERVE_TOKEN), or listen on this machine only with --host 127.0.0.1")
    try:
        return check_token(token)
    except ValueError as exc:
        raise VidtuneError(f"--token {exc}") from None


GENERATE = "\0generate"
MAX_UPLOAD_MB = 100 * 1024


def bind(host: str, port: int, resolved: tuple | None = None) -> socket.socket:
    """A listening socket on ``host:port``, or a clear error (exit 2) when it is taken or not ours to use."""
    family, addr = resolved or resolve(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only: a live listener still refuses
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise VidtuneError(f"port {port} on {host} is already in use (another server?); stop it, or choose "
                               "another port with --port") from None
        if exc.errno == errno.EACCES:
            raise VidtuneError(f"not allowed to listen on {host}:{port} (ports below 1024 need root); choose "
                               "another port with --port") from None
        raise VidtuneError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


def label_setup(args):
    """The Label page's options, checked (all three of --label-pool, --label-out, --classes, or none)."""
    given = {"--label-pool": args.label_pool, "--label-out": args.label_out, "--classes": args.classes}
    if not any(given.values()):
        return None
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise VidtuneError(f"the Label page needs --label-pool POOL, --label-out MANIFEST and --classes a,b,c; "
                           f"missing {', '.join(missing)}")
    if args.read_only:
        raise VidtuneError("--read-only writes nothing, but labelling writes --label-out; leave out one of them")
    out = args.label_out
    if out.suffix.lower() != ".csv":
        raise VidtuneError(f"--label-out {out}: give a .csv path (the labels are written as a vidtune manifest "
                           "path,label,start,end)")
    if out.is_dir():
        raise VidtuneError(f"--label-out {out} is a folder; give the path of a .csv file to write")
    from vidtune.serve.labeling import LabelSetup, parse_classes

    return LabelSetup(pool=tuple(args.label_pool), out=out, classes=parse_classes(args.classes),
                      run=args.run[0] if args.run else None)


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import jinja2  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise VidtuneError(f"`vidtune serve` needs the web extra ({exc.name} is missing): "
                           "pip install 'vidtune[web]'") from None
    from vidtune.serve import Catalog, create_app

    if not 0 <= args.port <= 65535:
        raise VidtuneError(f"--port must be between 0 and 65535, got {args.port}")
    if not 0 < args.max_upload_mb <= MAX_UPLOAD_MB:
        raise VidtuneError(f"--max-upload-mb must be above 0 and at most {MAX_UPLOAD_MB}, got {args.max_upload_mb:g}")
    label = label_setup(args)
    if args.index is None and not args.run and label is None:
        raise VidtuneError("nothing to serve: give --index INDEX_DIR, --run RUN_DIR and/or --label-pool POOL")
    from vidtune.serve.auth import is_loopback

    resolved = resolve(args.host, args.port)
    token = pick_token(args, is_loopback(str(resolved[1][0])))  # refused off loopback before listening
    sock = bind(args.host, args.port, resolved)  # first: a taken port fails before anything is read or created
    try:
        catalog = Catalog(args.index, args.run or (), cache_dir=args.cache_dir, read_only=args.read_only,
                          max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
        app = create_app(catalog, device=args.device, token=token, label=label)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if token is not None:
        from urllib.parse import quote

        url += f"?token={quote(token, safe='')}"
    info = {"url": url, "index": str(args.index) if args.index else None,
            "runs": {k: str(v) for k, v in catalog.runs.items()}, "read_only": args.read_only,
            "cache_dir": None if args.read_only else str(catalog.cache_dir), "token_required": token is not None,
            "label_out": str(label.out) if label is not None else None}
    if args.json:
        print_json(info)
        sys.stdout.flush()
    else:
        err.print(f"vidtune serving on [bold]{escape(url)}[/bold] (Ctrl-C stops)", highlight=False)
    if not is_loopback(host):
        err.print(f"[yellow]note:[/yellow] listening on {escape(host)}: other machines can reach this server; every "
                  "request needs the token (open the URL above once, or send `Authorization: Bearer TOKEN`). Plain "
                  "HTTP is not encrypted: put it behind an HTTPS proxy on an untrusted network.")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning" if not args.verbose else "info",
                                           access_log=bool(args.verbose)))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="a local web page: search results, runs (metrics, confusion clips) and tag "
                                     "timelines, with a JSON API")
    p.add_argument("--index", type=Path, default=None, metavar="INDEX_DIR", help="index to search (vidtune index build)")
    p.add_argument("--run", type=Path, action="append", default=None, metavar="RUN_DIR",
                   help="a run folder to show and tag with (repeat for several); the first one also ranks the Label "
                        "page's queue")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--read-only", action="store_true",
                   help="change nothing on disk: no uploads, no cached thumbnails or features")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where thumbnails, uploads and features go (default ~/.cache/vidtune/serve)")
    p.add_argument("--token", nargs="?", const=GENERATE, default=None, metavar="TOKEN",
                   help="require this token on every request (header `Authorization: Bearer TOKEN`, or open the "
                        "printed URL once: ?token= sets a cookie); --token alone generates one. Required with a "
                        "--host other machines can reach; default: $VIDTUNE_SERVE_TOKEN, else none on loopback")
    p.add_argument("--max-upload-mb", type=finite_float, default=200.0, help="largest upload (default 200 MB)")
    g = p.add_argument_group("labelling (the Label page)")
    g.add_argument("--label-pool", type=Path, action="append", default=None, metavar="POOL",
                   help="clips to label: a folder, a manifest or a video file (repeat for several)")
    g.add_argument("--label-out", type=Path, default=None, metavar="MANIFEST",
                   help="the labels as a vidtune CSV manifest (path,label,start,end), rewritten after every label; "
                        "a journal MANIFEST.journal beside it keeps every label safe")
    g.add_argument("--classes", default=None, metavar="a,b,c", help="the class names, separated by commas")
    device_arg(p)
    output_args(p, quiet=False)
    p.set_defaults(func=cmd_serve)
