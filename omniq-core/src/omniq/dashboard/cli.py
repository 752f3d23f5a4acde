"""``omniq dashboard``: serve the web dashboard with uvicorn (extra ``dashboard``).

Bound to 127.0.0.1 by default. Without ``--token`` a random one is made and printed
with the address to open (actions need it). Bound beyond loopback, a token is required
for every page as well.
"""

from __future__ import annotations

import argparse
import secrets

from rich.console import Console

from omniq.cli import command
from omniq.cli_engine import app_arg, load_app
from omniq.errors import ConfigurationError


def _args(p: argparse.ArgumentParser) -> None:
    app_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8642, help="port to bind (default: 8642)")
    p.add_argument(
        "--token",
        metavar="TOKEN",
        help="access token for actions (and for every page beyond loopback); default: a "
        "random one, printed at start (or OMNIQ_DASHBOARD_TOKEN)",
    )
    p.add_argument("--read-only", action="store_true", help="no token, no actions (loopback only)")


@command("dashboard", help="serve the web dashboard (pip install 'omniq-core[dashboard]')",
         configure=_args)  # fmt: skip
def _dashboard(args: argparse.Namespace, console: Console) -> int:
    import os

    try:
        import uvicorn

        from omniq.dashboard import create_app
        from omniq.dashboard.auth import is_loopback
        from omniq.dashboard.payloads import SafeViewManager
        from omniq.serialization import set_default_manager
        from omniq.serialization.manager import plugin_serializers
    except ImportError as e:
        raise ConfigurationError(
            f"the dashboard needs its extra: pip install 'omniq-core[dashboard]' ({e})"
        ) from e

    loopback = is_loopback(args.host)
    token = args.token or os.environ.get("OMNIQ_DASHBOARD_TOKEN") or None
    if args.read_only:
        if not loopback:
            raise ConfigurationError("--read-only is for loopback; beyond it give --token")
        token = None
    elif token is None:
        if not loopback:
            raise ConfigurationError(
                f"--host {args.host} is beyond loopback: give --token (or "
                "OMNIQ_DASHBOARD_TOKEN); every page will require it"
            )
        token = secrets.token_urlsafe(24)
    oq = load_app(args.app)
    # this process only shows payloads: a dill value is kept as bytes, never unpickled
    cfg = oq.config
    set_default_manager(SafeViewManager(cfg.secret_key, cfg.old_secret_keys, plugin_serializers()))
    app = create_app(oq, token, protect_reads=not loopback)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"
    console.print(f"[bold]OmniQ dashboard[/] on {url}", highlight=False)
    if token and not args.token and not os.environ.get("OMNIQ_DASHBOARD_TOKEN"):
        console.print(
            f"open {url}?token={token} (actions need this token)",
            highlight=False,
            soft_wrap=True,
        )
    elif token is None:
        console.print("read only: no token, no actions", style="dim")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
