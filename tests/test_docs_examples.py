"""Every command example in README.md and docs/ runs, so the docs cannot drift from the code.

What counts as an example, and what is done with it:

* ```bash blocks: each `harness ...` line (backslash continuations joined, `# comments` dropped) runs
  through the real CLI, in order, in one temporary working directory, and must exit 0. Any other line
  must be listed in NOT_HARNESS with the reason it is not run here.
* ```python blocks: executed in that directory. A block introduced by "From `tests/....py`:" is an
  excerpt of that test file and runs after that file's imports. A block preceded by
  `<!-- example: skip (why) -->` is a reference, not a program: only its import lines run.
* ```toml blocks that describe a launch gate are loaded with `analysis.gate.load_gate`.
* Usage synopses (unlabelled ``` blocks whose lines start with `harness`) and inline `harness ...` code
  spans: every `--flag` must exist on that command, and every `--flag a|b|c` choice list must match
  the command's choices.
* A command the docs call planned (PLANNED) must say "planned" where it is mentioned and must not
  exist yet; when it lands, this test says to update the docs.

The examples' inputs are made here: `export.parquet` (a per-unit A/B export: 1,500 users per arm, a
seeded watch-time lift, low-noise guardrail metrics so the default gate says SHIP) and a copy of
`analysis/gate_default.toml`. Everything the examples write (worlds, checkpoints, `harness.duckdb`)
stays in the temporary directory.
"""

from __future__ import annotations

import enum
import re
import shlex
import shutil
import sys
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from harness.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLANNED: set[str] = set()  # commands the docs describe as planned
NOT_HARNESS = {  # bash lines that are not `harness` commands, and why they are not run here
    "make demo": "installs the environment, then simulates the default world (minutes); CI runs make",
    "make test": "installs the environment and runs this very suite",
}
SKIP = re.compile(r"<!--\s*example:\s*skip\b")
FENCE = re.compile(r"^```(\w*)\s*$")
runner = CliRunner()


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: bool
    source: str | None = None  # "From `tests/x.py`:" before the block: an excerpt of that file

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def _blocks(doc: Path) -> list[Block]:
    out, lines, i = [], doc.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        source = re.search(r"From `(tests/[\w/]+\.py)`:\s*$", before)
        out.append(Block(doc, start + 1, m.group(1).lower(), "\n".join(body), bool(SKIP.search(before)),
                         source.group(1) if source else None))
        i += 1
    return out


def _prose(doc: Path) -> str:
    """The document without its fenced blocks."""
    text, keep, inside = doc.read_text().splitlines(), [], False
    for line in text:
        if FENCE.match(line) or (inside and line.startswith("```")):
            inside = not inside
            continue
        keep.append("" if inside else line)
    return "\n".join(keep)


def _imports(path: Path) -> list[str]:
    """The import statements of a module (multi-line ones included), as source lines."""
    import ast

    text = path.read_text()
    lines = text.splitlines()
    return [line for node in ast.parse(text).body if isinstance(node, ast.Import | ast.ImportFrom)
            for line in lines[node.lineno - 1:node.end_lineno]]


def _commands(text: str) -> list[str]:
    """Shell lines of a bash block: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(" ".join(shlex.quote(w) for w in words))
    return out


ALL_BLOCKS = [b for doc in DOCS for b in _blocks(doc)]


# ------------------------------------------------------------------------------ the examples' inputs
def _export(path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 1500
    arm = np.repeat(["control", "lsvcr"], n)
    pre = rng.gamma(4.0, 5.0, 2 * n)
    pd.DataFrame({
        "user_id": np.arange(2 * n),
        "arm": arm,
        "watch_time_s": 0.8 * pre + rng.normal(0.0, 4.0, 2 * n) + 1.5 * (arm == "lsvcr"),
        "watch_time_s_pre": pre,
        "video_interactions": 10.0 + rng.normal(0.0, 0.05, 2 * n),
        "comment_watch_time_s": 20.0 + rng.normal(0.0, 0.1, 2 * n),
        "comment_interactions": 5.0 + rng.normal(0.0, 0.02, 2 * n),
        "requests": rng.poisson(6.0, 2 * n) + 1,
        "activity": rng.choice(["low", "high"], 2 * n),
    }).to_parquet(path, index=False)


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HARNESS_DB", raising=False)
    _export(tmp_path / "export.parquet")
    (tmp_path / "analysis").mkdir()
    shutil.copy(ROOT / "analysis" / "gate_default.toml", tmp_path / "analysis" / "gate_default.toml")
    return tmp_path


# ------------------------------------------------------------------------------------------- tests
def test_the_docs_have_examples() -> None:
    langs = {b.lang for b in ALL_BLOCKS}
    assert {"bash", "python"} <= langs
    assert sum(1 for b in ALL_BLOCKS if b.lang == "bash" for c in _commands(b.text) if c.startswith("harness ")) >= 10


def _run_python(code: str, where: str) -> None:
    """Execute as a module of its own (dataclasses look their module up in sys.modules)."""
    module = types.ModuleType("docs_example")
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, where, "exec"), module.__dict__)  # noqa: S102
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_bash_and_python_examples_run(doc: Path, workdir: Path) -> None:
    blocks = [b for b in _blocks(doc) if b.lang in ("bash", "sh", "shell", "console", "python")]
    for block in blocks:
        if block.lang == "python":
            code = block.text
            if block.skip:  # a reference: its imports must still resolve
                code = "\n".join(line for line in code.splitlines() if line.startswith(("from ", "import ")))
            elif block.source:  # an excerpt of a test file: run it after that file's imports
                code = "\n".join([*_imports(ROOT / block.source), code])
            _run_python(code, block.where)
            continue
        if block.skip:
            continue
        for command in _commands(block.text):
            if not command.startswith("harness "):
                assert command in NOT_HARNESS, f"{block.where}: `{command}` is neither a harness command nor " \
                                               "listed in NOT_HARNESS"
                continue
            r = runner.invoke(app, shlex.split(command)[1:])
            assert r.exit_code == 0, f"{block.where}: `{command}` exited {r.exit_code}:\n{r.output[-3000:]}"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "toml"], ids=lambda b: b.where)
def test_gate_examples_load(block: Block, tmp_path: Path) -> None:
    from analysis.gate import load_gate

    data = tomllib.loads(block.text)
    if "primary" not in data and "guardrail" not in data:
        pytest.skip("not a launch gate")
    path = tmp_path / "gate.toml"
    path.write_text(block.text)
    gate = load_gate(path)
    assert gate.alpha == data["alpha"]


# --------------------------------------------------------------------- synopses and inline commands
def _tree() -> dict[tuple[str, ...], object]:
    out: dict[tuple[str, ...], object] = {}

    def walk(cmd, path: tuple[str, ...]) -> None:
        out[path] = cmd
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return out


def _mentions() -> list[tuple[str, str, str]]:
    """(where, command text, its context) for every synopsis line and inline `harness ...` span."""
    out = []
    for doc in DOCS:
        for block in _blocks(doc):
            if block.lang or not block.text.lstrip().startswith("harness"):
                continue
            current = ""
            for line in block.text.splitlines():
                if line.startswith("harness"):
                    if current:
                        out.append((block.where, current, "synopsis"))
                    current = line
                else:
                    current += " " + line.strip()
            out.append((block.where, current, "synopsis"))
        prose = _prose(doc)
        for par in re.split(r"\n\s*\n", prose):
            for line in par.splitlines():
                for span in re.findall(r"`(harness [^`]+)`", line):
                    context = line if line.lstrip().startswith("|") else par
                    out.append((str(doc.relative_to(ROOT)), span.replace("\\|", "|"), context))
    return out


MENTIONS = _mentions()


def _choices(param: object) -> set[str] | None:
    """An option's allowed values: its enum's (Typer) or its click Choice's; None when free."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {str(m.value) for m in annotation}
    choices = getattr(getattr(param, "type", None), "choices", None)
    return {str(c) for c in choices} if choices is not None else None


def test_synopses_and_inline_commands_name_real_options() -> None:
    tree = _tree()
    problems = []
    for where, text, context in MENTIONS:
        words = text.split()[1:]
        path: tuple[str, ...] = ()
        while words and (*path, words[0]) in tree:
            path, words = (*path, words[0]), words[1:]
        first = words[0] if words and not path else (path[0] if path else "")
        if first in PLANNED:
            if ("replay",) in tree:
                problems.append(f"{where}: `harness {first}` exists now: drop 'planned' from the docs and PLANNED")
            elif "planned" not in context.lower():
                problems.append(f"{where}: `{text}` names a planned command without saying it is planned")
            continue
        if not path:
            if words and not words[0].startswith("-") and words[0] != "...":
                problems.append(f"{where}: `{text}`: no command {words[0]!r}")
            continue
        cmd = tree[path]
        params = {opt: p for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
        rest = " ".join(words)
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            if flag != "--help" and flag not in params:
                problems.append(f"{where}: `harness {' '.join(path)}` has no option {flag}")
        for flag, values in re.findall(r"(--[a-z][a-z0-9-]*)[ =]([\w.]+(?:\|[\w.]+)+)", rest):
            choices = _choices(params.get(flag))
            if choices is not None and set(values.split("|")) != choices:
                problems.append(f"{where}: {flag} {values} but the choices are {'|'.join(sorted(choices))}")
    assert not problems, "\n".join(problems)


# Notes kept outside the repository that files still point to; each owner replaces its own lines with
# a pointer into docs/ (docs/architecture.md, docs/lsvcr-method.md), then removes its entry here.
PENDING: set[str] = set()  # every reference now points into docs/


def test_the_repository_stands_alone() -> None:
    """No file points to design notes outside the repository; docs/ holds what matters."""
    outside = re.compile(r"\b(DESIGN|NOTES|LSVCR|STYLE)\.md\b|/work/shared")
    found = set()
    for folder in ("analysis", "harness", "models", "dashboards", "bench", "tests", "docs", "scripts"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".toml", ".sh") and path.is_file() and path != Path(__file__):
                if outside.search(path.read_text(errors="replace")):
                    found.add(str(path.relative_to(ROOT)))
    for path in (ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "pyproject.toml", ROOT / "Makefile"):
        if outside.search(path.read_text()):
            found.add(path.name)
    assert found <= PENDING, f"point these to docs/ instead: {sorted(found - PENDING)}"
