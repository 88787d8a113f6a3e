"""Every benchmark script answers `--help` with its usage and exits 0, without starting the benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One child process runs every script's `--help` (imports shared, so the test stays quick); a script
# that ignored --help would start its benchmark and run into the timeout.
CHILD = r"""
import contextlib, io, runpy, sys
from pathlib import Path
bad = []
for script in sorted(Path("bench").glob("*.py")):
    sys.argv = [str(script), "--help"]
    sys.path.insert(0, str(script.parent))
    out = io.StringIO()
    code = None
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None) or "usage:" not in out.getvalue():
        bad.append(f"{script}: exit {code!r}, output {out.getvalue()[:200]!r}")
print("\n".join(bad) or "ok")
"""


def test_every_bench_script_prints_help_and_exits() -> None:
    scripts = sorted((ROOT / "bench").glob("*.py"))
    assert len(scripts) >= 5
    res = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok", res.stdout
