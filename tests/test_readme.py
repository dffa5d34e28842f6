"""Every code block of README.md runs, offline, on this install (the `test` extra holds every
extra the README's blocks install), so the README cannot rot.

A block is code when its fence names a language this test runs: ``bash``/``sh``/``shell`` or
``python``. Fences with no language or another one (```text, the command-line synopsis, the
layout tree) are not code. A code block that cannot run here is marked on the line before its
fence with ``<!-- no-test: REASON -->`` (a GPU, a Ray cluster, the network, or the test suite
itself); at most MAX_SKIPPED blocks may be.

How the blocks run: in an empty temporary folder holding a link ``engine`` to the repository's
``engine`` folder (so ``engine/examples/...`` paths work), a folder ``bench`` of links to the
repository's bench scripts with empty ``results``/``gallery`` folders (so a block's outputs
under ``bench/`` land in the temporary folder, never in the repository), and, beside it, a
link ``shared`` to ``../shared`` when the repository has one (a block naming ``../shared/`` is
skipped when not), with this interpreter's ``bin`` on PATH (the ``stylegrad`` command). A
shell block runs as one ``bash -e -o pipefail`` script (its variables carry from line to
line). ``pip install`` commands are not run: their extras must exist in pyproject.toml and be
installed here, and a pinned torch must be the installed one. To keep it quick the sizes are
made small: in shell commands ``--size N`` becomes 32, ``--iters N``/``--first-iters N`` 5,
``--repeat N`` 1, ``--to-loss PEER:N`` ``PEER:5`` and ``"size": N``/``"iters": N`` in JSON
32 and 5; in Python ``size=N``/``iters=N`` become 32 and 5 (README "Development" says so).

A server: a block marked ``<!-- test: server -->`` holds one command that starts a server
(``stylegrad serve``, loopback only). The test starts it in the background on a free loopback
port (put for ``--port``/``8000``), waits for ``/healthz`` and ``/readyz``, runs the code
blocks after it in the same section against it (``127.0.0.1:8000`` becomes that port), then
stops it with SIGTERM and checks it exits 0.
"""
import importlib.metadata as md
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
SHELL = {"bash", "sh", "shell"}
MAX_SKIPPED = 3
SMALL_SIZE, SMALL_ITERS, SMALL_REPEAT = 32, 5, 1   # 5: with 2, a warm-started video frame can end above its start (refused as diverged)
MARK = re.compile(r"^<!--\s*(?P<kind>no-test|test):\s*(?P<what>.*?)\s*-->$")
SERVER_ROLE = "server"


def readme_blocks(text):
    """[(line number, language, code, skip reason or None, role or None, section)] of every
    fenced block; the role is what ``<!-- test: ROLE -->`` names, the section the last ``#``/``##``
    heading before it."""
    blocks, lines, i, section = [], text.splitlines(), 0, ""
    while i < len(lines):
        if re.match(r"^#{1,2} ", lines[i]):
            section = lines[i].lstrip("#").strip()
        m = re.match(r"^```\s*([\w+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and not re.match(r"^```\s*$", lines[j]):
            j += 1
        prev = next((l.strip() for l in reversed(lines[:start]) if l.strip()), "")
        mark = MARK.match(prev)
        why = mark.group("what") if mark and mark.group("kind") == "no-test" else None
        role = mark.group("what") if mark and mark.group("kind") == "test" else None
        blocks.append((start + 1, lang, "\n".join(lines[start + 1:j]), why, role, section))
        i = j + 1
    return blocks


def code_blocks():
    return [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b[1] in SHELL | {"python"}]


def server_groups():
    """{line of a server block: [the server block, then the code blocks after it in its section]}"""
    groups, current = {}, None
    for b in code_blocks():
        if b[4] == SERVER_ROLE:
            current = groups.setdefault(b[0], [b])
        elif current is not None and b[5] == current[0][5]:
            current.append(b)
        else:
            current = None
    return groups


def test_the_extractor_tells_code_from_text():
    text = ("```bash\necho a\n```\n\n```text\nnot code\n```\n```\nsynopsis\n```\n"
            "<!-- no-test: needs a GPU -->\n\n```python\nimport x\n```\n## S\n<!-- test: server -->\n```bash\nserve\n```\n")
    assert [b[1:] for b in readme_blocks(text)] == [
        ("bash", "echo a", None, None, ""), ("text", "not code", None, None, ""), ("", "synopsis", None, None, ""),
        ("python", "import x", "needs a GPU", None, ""), ("bash", "serve", None, "server", "S")]


def test_few_blocks_are_skipped_and_each_says_why():
    skipped = [(b[0], b[3]) for b in code_blocks() if b[3] is not None]
    assert all(why for _, why in skipped), skipped
    assert len(skipped) <= MAX_SKIPPED, f"too many README blocks marked no-test: {skipped}"
    assert len(code_blocks()) - len(skipped) >= 3        # the quickstart, the Python API, export
    for line, group in server_groups().items():           # a server is there for its clients
        assert any(b[3] is None for b in group[1:]), f"README line {line}: a server block with no client after it"


def test_the_shrinking_keeps_commands_runnable():
    cmd = ('stylegrad bench --size 256 --iters=20 --first-iters 80 --repeat 3 --to-loss neural-style-pt:500 '
           '--to-loss 1e5 -F \'options={"size": 256, "iters": 200}\'')
    assert _small_shell(cmd) == ('stylegrad bench --size 32 --iters 5 --first-iters 5 --repeat 1 '
                                 '--to-loss neural-style-pt:5 --to-loss 1e5 -F \'options={"size": 32, "iters": 5}\'')
    assert _small_python("f(size=256, iters=200)") == "f(size=32, iters=5)"


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
    cmd = re.sub(r"--(first-)?iters[ =]\d+", lambda m: f"--{m.group(1) or ''}iters {SMALL_ITERS}", cmd)
    cmd = re.sub(r"--repeat[ =]\d+", f"--repeat {SMALL_REPEAT}", cmd)
    cmd = re.sub(r"(--to-loss[ =][\w.-]+):\d+", rf"\1:{SMALL_ITERS}", cmd)
    cmd = re.sub(r'"size":\s*\d+', f'"size": {SMALL_SIZE}', cmd)
    return re.sub(r'"iters":\s*\d+', f'"iters": {SMALL_ITERS}', cmd)


def _small_python(code):
    code = re.sub(r"\bsize=\d+", f"size={SMALL_SIZE}", code)
    return re.sub(r"\biters=\d+", f"iters={SMALL_ITERS}", code)


def _workdir(tmp_path):
    """(the folder a block runs in, its environment): see the module's docstring."""
    work = tmp_path / "readme"
    work.mkdir()
    (work / "engine").symlink_to(ROOT / "engine", target_is_directory=True)
    (work / "bench").mkdir()
    for entry in (ROOT / "bench").iterdir():
        if entry.name in ("results", "gallery"):
            (work / "bench" / entry.name).mkdir()
        elif not entry.name.startswith((".", "__")):
            (work / "bench" / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               OMP_NUM_THREADS="1", STYLEGRAD_OFFLINE="1")
    return work, env


def _skip_without_shared(blocks):
    if not SHARED.is_dir() and any("../shared/" in b[2] for b in blocks if b[3] is None):
        pytest.skip(f"README line {blocks[0][0]} uses ../shared/images, which is not beside the repository")


def _run(args, cwd, env, what):
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{what} failed ({p.returncode}):\n{p.stderr[-3000:]}"


def _shell_commands(code):
    """The block's commands, one a line (continuations joined, comments dropped, ``&&`` parts
    split); ``pip install`` ones are checked instead of kept."""
    cmds = []
    for cmd_line in re.sub(r"\\\n\s*", " ", code).splitlines():
        cmd_line = cmd_line.split(" #", 1)[0].strip()
        if not cmd_line or cmd_line.startswith("#"):
            continue
        for cmd in (c.strip() for c in cmd_line.split("&&")):
            if cmd.startswith("pip install"):
                _check_pip_install(cmd)
            else:
                cmds.append(cmd)
    return cmds


def _run_block(block, work, env, port=None):
    line, lang, code, _, _, _ = block
    if port is not None:
        code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    if lang == "python":
        script = work / f"block-{line}.py"
        script.write_text(_small_python(code))
        _run([sys.executable, str(script)], work, env, f"README line {line} (python)")
        return
    script = "\n".join(_small_shell(c) for c in _shell_commands(code))
    _run(["bash", "-e", "-o", "pipefail", "-c", script], work, env, f"README line {line}:\n{script}\n")


def _free_loopback_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except OSError:
        return None


def _server_command(block, port):
    cmds = _shell_commands(block[2])
    assert len(cmds) == 1, f"README line {block[0]}: a server block holds one command besides pip: {cmds}"
    cmd = cmds[0]
    host = re.search(r"--host[ =](\S+)", cmd)
    assert host is None or host.group(1) in ("127.0.0.1", "localhost"), f"README line {block[0]}: loopback only here"
    cmd, n = re.subn(r"--port[ =]\d+", f"--port {port}", cmd)
    return cmd if n else f"{cmd} --port {port}"


@pytest.mark.parametrize("block", [pytest.param(b, id=f"README line {b[0]}") for b in code_blocks()
                                   if not any(b in g for g in server_groups().values())])
def test_readme_block_runs_offline(tmp_path, block):
    if block[3] is not None:
        pytest.skip(f"README line {block[0]}: {block[3]}")
    _skip_without_shared([block])
    work, env = _workdir(tmp_path)
    _run_block(block, work, env)


@pytest.mark.parametrize("group", [pytest.param(g, id=f"README line {line} and its clients")
                                   for line, g in server_groups().items()])
def test_readme_server_and_its_clients_run_offline(tmp_path, group):
    server, clients = group[0], [b for b in group[1:] if b[3] is None]
    _skip_without_shared(group)
    work, env = _workdir(tmp_path)
    port = _free_loopback_port()
    cmd = _server_command(server, port)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(["bash", "-c", f"exec {cmd}"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        for path in ("/healthz", "/readyz"):
            while _get(f"http://127.0.0.1:{port}{path}") != 200:
                assert proc.poll() is None, (f"README line {server[0]}: {cmd} exited {proc.returncode}: "
                                             f"{(tmp_path / 'server.log').read_text()[-3000:]}")
                assert time.monotonic() < deadline, f"README line {server[0]}: {path} not 200 after 120 s"
                time.sleep(0.2)
        for block in clients:
            _run_block(block, work, env, port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, f"README line {server[0]}: SIGTERM: exit {proc.returncode}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
