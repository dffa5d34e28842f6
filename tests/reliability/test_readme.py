"""Every code block of README.md runs, offline, on this install (the `test` extra holds every
extra the README's blocks install), so the README cannot rot.

A block is code when its fence names a language this test runs: ``bash``/``sh``/``shell`` or
``python``. Fences with no language or another one (```text, the command-line synopsis, the
layout tree) are not code. A code block that cannot run here is marked on the line before its
fence with ``<!-- no-test: REASON -->`` (a GPU, a Ray cluster, the network, or the test suite
itself); at most MAX_SKIPPED blocks may be.

How the blocks run: in an empty temporary folder holding a link ``engine`` to the repository's
``engine`` folder (so ``engine/examples/...`` paths work), with this interpreter's ``bin`` on
PATH (the ``stylegrad`` command). ``pip install`` commands are not run: their extras must exist
in pyproject.toml and be installed here, and a pinned torch must be the installed one. To keep
it quick the sizes are made small: ``--size N``/``--iters N`` in shell commands and ``size=N``
/ ``iters=N`` in Python become 32 and 2 (README "Development" says so).
"""
import importlib.metadata as md
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHELL = {"bash", "sh", "shell"}
MAX_SKIPPED = 3
SMALL_SIZE, SMALL_ITERS = 32, 2
SKIP_MARK = re.compile(r"^<!--\s*no-test:\s*(?P<why>.*?)\s*-->$")


def readme_blocks(text):
    """[(line number, language, code, skip reason or None)] of every fenced block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```\s*([\w+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and not re.match(r"^```\s*$", lines[j]):
            j += 1
        prev = next((l.strip() for l in reversed(lines[:start]) if l.strip()), "")
        mark = SKIP_MARK.match(prev)
        blocks.append((start + 1, lang, "\n".join(lines[start + 1:j]), mark.group("why") if mark else None))
        i = j + 1
    return blocks


def code_blocks():
    return [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b[1] in SHELL | {"python"}]


def test_the_extractor_tells_code_from_text():
    text = ("```bash\necho a\n```\n\n```text\nnot code\n```\n```\nsynopsis\n```\n"
            "<!-- no-test: needs a GPU -->\n\n```python\nimport x\n```\n")
    assert [(b[1], b[2], b[3]) for b in readme_blocks(text)] == [
        ("bash", "echo a", None), ("text", "not code", None), ("", "synopsis", None), ("python", "import x", "needs a GPU")]


def test_few_blocks_are_skipped_and_each_says_why():
    skipped = [(line, why) for line, _, _, why in code_blocks() if why is not None]
    assert all(why for _, why in skipped), skipped
    assert len(skipped) <= MAX_SKIPPED, f"too many README blocks marked no-test: {skipped}"
    assert len(code_blocks()) - len(skipped) >= 3        # the quickstart, the Python API, export


def _extras():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _check_pip_install(cmd):
    """A README ``pip install``: what it installs must be what this test environment has."""
    for arg in cmd.split()[2:]:
        arg = arg.strip("'\"")
        if arg.startswith("-"):
            continue
        m = re.match(r"^(?:\.|stylegrad)\[(?P<extras>[\w,-]+)\]$", arg)
        if m:
            for extra in m.group("extras").split(","):
                assert extra in _extras(), f"README installs an extra pyproject.toml lacks: {extra}"
                for req in _extras()[extra]:
                    name = re.split(r"[<>=!~\[; ]", req, 1)[0]
                    md.version(name)        # raises PackageNotFoundError when not installed
        elif arg.startswith("torch=="):
            assert torch.__version__.split("+")[0] == arg.split("==")[1], (arg, torch.__version__)
        elif arg != ".":
            md.version(arg)


def _small_shell(cmd):
    cmd = re.sub(r"--size[ =]\d+", f"--size {SMALL_SIZE}", cmd)
    return re.sub(r"--iters[ =]\d+", f"--iters {SMALL_ITERS}", cmd)


def _small_python(code):
    code = re.sub(r"\bsize=\d+", f"size={SMALL_SIZE}", code)
    return re.sub(r"\biters=\d+", f"iters={SMALL_ITERS}", code)


def _workdir(tmp_path):
    (tmp_path / "engine").symlink_to(ROOT / "engine", target_is_directory=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1", STYLEGRAD_OFFLINE="1")
    return env


def _run(args, cwd, env, what):
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{what} failed ({p.returncode}):\n{p.stderr[-3000:]}"


@pytest.mark.parametrize("block", [pytest.param(b, id=f"README line {b[0]}") for b in code_blocks()])
def test_readme_block_runs_offline(tmp_path, block):
    line, lang, code, why = block
    if why is not None:
        pytest.skip(f"README line {line}: {why}")
    env = _workdir(tmp_path)
    if lang == "python":
        script = tmp_path / "block.py"
        script.write_text(_small_python(code))
        _run([sys.executable, str(script)], tmp_path, env, f"README line {line} (python)")
        return
    # shell: join continuation lines, drop comments, run each && part (pip install: checked)
    text = re.sub(r"\\\n\s*", " ", code)
    for cmd_line in text.splitlines():
        cmd_line = cmd_line.split(" #", 1)[0].strip()
        if not cmd_line or cmd_line.startswith("#"):
            continue
        for cmd in (c.strip() for c in cmd_line.split("&&")):
            if cmd.startswith("pip install"):
                _check_pip_install(cmd)
            else:
                _run(["bash", "-e", "-c", _small_shell(cmd)], tmp_path, env, f"README line {line}: {cmd}")
