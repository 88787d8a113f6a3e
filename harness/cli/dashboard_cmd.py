"""`harness dashboard`: the launch-decision dashboard (Streamlit) over a results database.

A thin launcher: it checks the database path and the port, then runs `streamlit run dashboards/app.py`
in a child process with the database passed as `$HARNESS_DB`, and returns when the server stops
(Ctrl-C). The app reads the database read-only (docs/dashboard.md). Exit 0 when the server stopped
normally, 3 for any error (a missing database, a busy port, Streamlit missing or failing to start).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import typer

from harness.cli.shared import EXIT_ERROR, DbOpt, UserError, cli_errors, print_error


def app_file() -> Path:
    """dashboards/app.py of the installed package (found without importing it: no Streamlit here)."""
    spec = importlib.util.find_spec("dashboards")
    if spec is None or spec.origin is None:
        raise UserError("the dashboards package is not installed; run `bash scripts/setup.sh` (or `pip install -e .`)")
    return Path(spec.origin).parent / "app.py"


def register(app: typer.Typer) -> None:
    """Add this command to the top-level app."""
    app.command("dashboard", help="Open the launch-decision dashboard (Streamlit) over a results database, "
                                  "read-only: runs, decision, metrics, segments, over time, models, truth.")(
        dashboard_cmd)


def _database(db: Path | None) -> Path:
    from harness.store import default_db_path

    path = (db or default_db_path()).expanduser().resolve()
    if not path.exists():
        raise UserError(f"results database {path} does not exist; create it with `harness analyze`, `harness replay` "
                        "or `harness evaluate`, or pass --db PATH")
    if path.is_dir():
        raise UserError(f"results database {path} is a folder, not a file; pass a file with --db")
    return path


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: a port in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pass another --port or --host") \
                from None


def streamlit_command(app_file: Path, *, host: str, port: int, headless: bool) -> list[str]:
    """The `streamlit run` command line: no usage statistics, no file watcher, no browser when headless."""
    return [sys.executable, "-m", "streamlit", "run", str(app_file),
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "true" if headless else "false",
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false", "--client.toolbarMode", "viewer"]


def _serve(command: list[str], env: dict[str, str]) -> int:
    """Run the server until it stops; Ctrl-C or SIGTERM to this process stops the server too (never an
    orphaned server holding the port)."""
    proc = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def dashboard_cmd(
    db: Path | None = DbOpt,
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port to serve the dashboard on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    headless: bool = typer.Option(False, "--headless", help="Do not open a browser (servers, CI, tests)."),
) -> None:
    with cli_errors():
        path = _database(db)
        if importlib.util.find_spec("streamlit") is None:
            raise UserError("streamlit is not installed in this environment; run `bash scripts/setup.sh` (or "
                            "`pip install -e .`)")
        _check_port(host, port)
        env = {**os.environ, "HARNESS_DB": str(path)}
        typer.echo(f"dashboard of {path} at http://{host}:{port} (read-only; Ctrl-C stops it)", err=True)
        code = _serve(streamlit_command(app_file(), host=host, port=port, headless=headless), env)
    if code not in (0, -2, -15, 130, 143):  # SIGINT (Ctrl-C) or SIGTERM: a normal stop
        print_error(f"the dashboard server stopped with exit code {code}; see its output above")
        raise typer.Exit(EXIT_ERROR)
