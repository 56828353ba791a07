"""The documentation stays true: README.md and docs/ build, and every command they show is
checked (docs/development.md, "Commands in the docs").

Each command block (a fence of bash, sh, shell, console or python) carries a marker on the
line before it:

- ``<!-- doc-test: run -->``: the slow test of its page runs it, in page order, in a copy
  of the tiny pipeline (``tiny_pipeline``); a fence marked ``<!-- doc-test: prints -->``
  right after it holds lines its output must contain (``...`` matches anything);
- ``<!-- doc-test: run-fails -->``: the same, for a block that shows an error: it must
  exit with a non-zero status (and print what its prints block says);
- ``<!-- doc-test: parse -->``: it needs real data, a GPU, a cluster or another machine,
  so it is only parsed: every ``atreid`` verb and flag, every ``snakemake`` and ``dvc`` flag,
  every ``--config``/``-S`` key (against the params schema), every ``make`` target and
  every file it names in the repository must exist.

Run blocks are parsed too (fast tier), so a renamed flag or key fails ``make check``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

MARKER = re.compile(r"^<!--\s*doc-test:\s*(run|run-fails|parse|prints)\s*-->$")
RUN = ("run", "run-fails")
COMMAND_LANGUAGES = {"bash", "sh", "shell", "console", "python"}
PAGES = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Programs a block may call that are not this project's (system tools, SLURM, git): only
# their existence in the text is accepted; scripts of the repository must exist.
EXTERNAL = {"git", "source", "export", "cd", "cp", "mkdir", "rm", "ls", "cat", "xdg-open", "open",
            "sinfo", "sacct", "sacctmgr", "squeue", "scancel", "sbatch", "tmux", "screen", "pip", "apt-get",
            "sudo", "brew", "dot", "pytest", "mkdocs", "du", "df", "nvidia-smi", "head", "tail", "grep", "echo"}
PREFIXES = {"time", "sudo", "env"}  # a prefix word: the command that follows is checked


def load_hook():
    """docs/hooks/generated_pages.py (the MkDocs hook), for its schema walk."""
    spec = importlib.util.spec_from_file_location("generated_pages", REPO / "docs" / "hooks" / "generated_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOK = load_hook()
SCHEMA = HOOK.load_schema()


@dataclass
class Block:
    page: Path
    line: int       # of the opening fence, 1-based
    language: str
    marker: str | None
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, each with the marker on the last non-blank line before it."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(```+)(.*)$", lines[i])
        if not fence:
            i += 1
            continue
        indent, ticks, info = fence.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks)
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        found.append(Block(page, i + 1, (info.split() or [""])[0], marker[1] if marker else None, body))
        i = end + 1
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks_of(page)]
COMMAND_BLOCKS = [block for block in ALL_BLOCKS if block.language in COMMAND_LANGUAGES]


def commands_of(text: str) -> list[list[str]]:
    """The simple commands of a bash block: continuations joined, comments dropped, split at
    ``&&``, ``||``, ``;`` and ``|``, redirections dropped, ``<placeholder>`` kept as one word."""
    text = re.sub(r"\\\n", " ", text)
    # A placeholder (<rev>, <your repository>) is one word: its brackets are no redirection.
    text = re.sub(r"<([A-Za-z][^<>\n]*)>", lambda m: shlex.quote(f"\u2039{m[1]}\u203a"), text)
    commands = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        command: list[str] = []
        tokens = list(lexer)
        skip = False
        for token in tokens:
            if skip:
                skip = False
            elif token in {"&&", "||", ";", "|", "&"}:
                commands.append(command)
                command = []
            elif token in {">", ">>", "<", "2>", "&>"} or token.endswith(">"):
                skip = True
            else:
                command.append(token.replace("\u2039", "<").replace("\u203a", ">"))
        commands.append(command)
    return [command for command in commands if command]


def check_config_key(key: str, where: str) -> None:
    assert HOOK.schema_has_key(SCHEMA, key), f"{where}: params key {key!r} is not in the schema"


def check_config_value(key: str, value, where: str) -> None:
    check_config_key(key, where)
    if isinstance(value, dict):
        for sub, subvalue in value.items():
            check_config_value(f"{key}.{sub}", subvalue, where)


@functools.cache
def snakemake_parser():
    from snakemake.cli import get_argument_parser

    return get_argument_parser()


def check_snakemake(args: list[str], where: str) -> None:
    parsed = parse_or_fail(snakemake_parser(), args, where)
    for item in parsed.config or []:
        key, _, value = item.partition("=")
        check_config_value(key, yaml.safe_load(value), where)
    for path in parsed.configfile or []:
        assert (REPO / path).is_file(), f"{where}: --configfile {path} does not exist"
    for path in ([parsed.profile] if isinstance(parsed.profile, str) else parsed.profile or []):
        assert (REPO / path).is_dir(), f"{where}: --profile {path} does not exist"


def check_dvc(args: list[str], where: str) -> None:
    from dvc.cli.parser import get_main_parser

    parsed = parse_or_fail(get_main_parser(), args, where)
    for item in getattr(parsed, "set_param", None) or []:
        key = item.partition("=")[0].split(":")[-1].lstrip("+~")
        check_config_key(key, where)


def check_atreid(args: list[str], where: str) -> None:
    from atreid.cli import build_parser

    parse_or_fail(build_parser(), args, where)


def parse_or_fail(parser, args: list[str], where: str):
    import contextlib
    import io

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(args)
    except SystemExit as exit_:
        if exit_.code == 0:  # --help
            return None
        error = (stderr.getvalue().strip().splitlines() or ["no message"])[-1]  # argparse's "prog: error: ..."
        raise AssertionError(f"{where}: {' '.join(args)}: {error}") from None
    except Exception as error:  # DVC's parser raises its own error (and logs the reason)
        raise AssertionError(f"{where}: {' '.join(args)}: {type(error).__name__}: {error}") from None


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, re.M))


def check_make(args: list[str], where: str) -> None:
    targets = [arg for arg in args if not arg.startswith("-") and "=" not in arg]
    missing = set(targets) - make_targets()
    assert not missing, f"{where}: make target(s) {sorted(missing)} not in the Makefile"


def check_python(args: list[str], where: str) -> None:
    if args[:2] == ["-m", "atreid"]:
        return check_atreid(args[2:], where)
    if args and args[0] == "-c":
        compile(args[1], where, "exec")
        return
    script = REPO / args[0]
    assert script.is_file(), f"{where}: {args[0]} does not exist"
    options = {node.value for node in ast.walk(ast.parse(script.read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("--")}
    unknown = {arg.split("=")[0] for arg in args[1:] if arg.startswith("--")} - options
    assert not unknown, f"{where}: {args[0]} has no option(s) {sorted(unknown)}"


def check_command(command: list[str], where: str) -> None:
    while command and re.match(r"^[A-Z_][A-Z0-9_]*=", command[0]):  # VAR=value prefixes
        command = command[1:]
    while command and command[0] in PREFIXES:
        command = command[1:]
    if not command:
        return
    program, args = command[0], command[1:]
    name = program.removeprefix(".venv/bin/")
    checks = {"atreid": check_atreid, "snakemake": check_snakemake, "dvc": check_dvc, "make": check_make,
              "python": check_python, "python3": check_python}
    if name in checks:
        checks[name](args, where)
    elif name == "bash":
        assert (REPO / args[0]).is_file(), f"{where}: bash {args[0]}: no such script"
    elif "/" in program:
        assert (REPO / program).is_file(), f"{where}: {program}: no such script in the repository"
    else:
        assert name in EXTERNAL, (f"{where}: unknown program {program!r}: check it here (tests/test_docs.py) "
                                  "or add it to EXTERNAL")


def top_level_names(module: str) -> set[str]:
    """The names a module of the package defines or imports at its top level (from its source)."""
    path = REPO.joinpath(*module.split("."))
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    assert source.is_file(), f"no module {module}"
    names = {child.name for child in path.iterdir()} if path.is_dir() else set()
    names = {name.removesuffix(".py") for name in names}
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def check_block(block: Block) -> None:
    if block.language == "python":
        tree = ast.parse(block.text, block.where)
        for node in ast.walk(tree):  # what it imports from atreid exists (read, not imported: no torch here)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "atreid":
                defined = top_level_names(node.module)
                for alias in node.names:
                    assert alias.name in defined, f"{block.where}: {node.module} has no {alias.name}"
        return
    for command in commands_of(block.text):
        check_command(command, block.where)


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move sections into docs/"
    # Its links into the docs resolve in the repository (mkdocs checks the site's own links).
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", "\n".join(lines)):
        if not re.match(r"^[a-z]+:", target):
            assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"


def test_every_command_block_is_marked():
    unmarked = [block.where for block in COMMAND_BLOCKS if block.marker not in (*RUN, "parse")]
    assert not unmarked, ("command blocks without <!-- doc-test: run --> or <!-- doc-test: parse --> before "
                          f"them: {unmarked}")
    for block in ALL_BLOCKS:
        if block.marker == "prints":
            previous = ALL_BLOCKS[ALL_BLOCKS.index(block) - 1]
            assert previous.marker in RUN and previous.page == block.page, \
                f"{block.where}: a prints block follows a run block"


@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=lambda block: block.where)
def test_every_command_parses(block):
    check_block(block)


def test_every_params_fragment_names_schema_keys():
    fragments = [block for block in ALL_BLOCKS if block.language == "yaml"]
    assert fragments
    for block in fragments:
        fragment = yaml.safe_load(block.text)
        for key, value in fragment.items():
            check_config_value(key, value, block.where)


def test_the_checks_catch_a_renamed_flag_or_key():
    with pytest.raises(AssertionError, match="unrecognized arguments: --no-such-flag"):
        check_command(["atreid", "extract", "--model", "m.pt", "--folder", "f", "--out", "x.parquet", "--no-such-flag"], "x")
    with pytest.raises(AssertionError, match="not in the schema"):
        check_command(["snakemake", "--config", 'train={"epoch": 1}'], "x")
    with pytest.raises(AssertionError, match="not in the schema"):
        check_command(["dvc", "exp", "run", "-S", "+variants.full.train.epoch=12"], "x")
    with pytest.raises(AssertionError, match="x: exp show --no-such-flag: DvcParserError"):
        check_command(["dvc", "exp", "show", "--no-such-flag"], "x")
    with pytest.raises(AssertionError, match="not in the Makefile"):
        check_command(["make", "chek"], "x")
    with pytest.raises(AssertionError, match="no option"):
        check_command(["python", "benchmarks/loader.py", "--imgs", "3"], "x")
    check_command(["dvc", "exp", "run", "-S", "+variants.full.train.epochs=12"], "x")
    assert commands_of("a --x 1 \\\n  --y <b c> && b | c > out.txt  # note\nd <rev>") == \
        [["a", "--x", "1", "--y", "<b c>"], ["b"], ["c"], ["d", "<rev>"]]


def test_the_params_reference_lists_every_key():
    page = HOOK.render_params_reference(SCHEMA)
    for key in ("seeds", "data.atustc.source", "variants.<name>.train", "eval.rerank.k1", "train.epochs"):
        assert f"| `{key}` |" in page, key
    assert "| `seed` | refused |" in page


def test_the_site_builds_strictly(tmp_path):
    started = time.monotonic()
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                           cwd=REPO, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-4000:]
    assert (tmp_path / "site" / "params" / "index.html").is_file()
    assert "register_benchmark" in (tmp_path / "site" / "api" / "index.html").read_text()
    assert "--benchmark" in (tmp_path / "site" / "cli" / "index.html").read_text()
    print(f"mkdocs build --strict: {time.monotonic() - started:.1f} s")


# --- the run blocks, on the tiny pipeline -------------------------------------------------

def expected_lines(block: Block) -> list[re.Pattern[str]]:
    patterns = []
    for line in filter(None, (line.strip() for line in block.text.splitlines())):
        parts = [r"\s+".join(map(re.escape, piece.split())) for piece in line.split("...")]
        patterns.append(re.compile(".*?".join(parts)))
    return patterns


RUN_PAGES = sorted({block.page for block in COMMAND_BLOCKS if block.marker in RUN})


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_run_blocks_print_what_the_page_says(page, tiny_pipeline, tmp_path):
    from tests.e2e import BIN, copy_pipeline

    work = copy_pipeline(tiny_pipeline.work, tmp_path / "repo")
    (work / ".venv").symlink_to(REPO / ".venv")  # `source .venv/bin/activate`, `.venv/bin/...`
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ATREID_QUIET="1",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    blocks = blocks_of(page)
    for i, block in enumerate(blocks):
        if block.marker not in RUN:
            continue
        argv = [sys.executable, "-c", block.text] if block.language == "python" else \
            ["bash", "-eo", "pipefail", "-c", block.text]
        ran = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
        output = ran.stdout + ran.stderr
        if block.marker == "run":
            assert ran.returncode == 0, f"{block.where} failed ({ran.returncode}):\n{output[-6000:]}"
        else:
            assert ran.returncode != 0, f"{block.where} should fail, and exited with 0:\n{output[-6000:]}"
        if i + 1 < len(blocks) and blocks[i + 1].marker == "prints":
            for pattern in expected_lines(blocks[i + 1]):
                assert pattern.search(output), f"{blocks[i + 1].where}: {pattern.pattern!r} not printed:\n{output[-6000:]}"
