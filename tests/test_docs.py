"""The README and docs/ against the code: the README's quick command blocks run as written, every
command line in the docs parses, the generated reference pages are current, and every relative
link resolves."""
import re
import shlex
from pathlib import Path

import pytest

from mobilenets.cli import build_parser, main
from mobilenets.tables import TABLE_WIDTH

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

#: A fenced block, with the HTML comment marking it (``<!-- test: quick -->``) if any.
FENCE = re.compile(r"(?:<!-- test: (?P<mark>\w+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)\n```",
                   re.S)


def blocks(path: Path, lang: str | None = None, mark: str | None = None) -> list[str]:
    """The bodies of ``path``'s fenced blocks in ``lang`` (any if None) marked ``mark``."""
    return [m["body"] for m in FENCE.finditer(path.read_text())
            if (lang is None or m["lang"] == lang) and (mark is None or m["mark"] == mark)]


def command_lines(body: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line for line in joined.splitlines() if shlex.split(line, comments=True)]


def mobilenets_argv(line: str) -> list[str] | None:
    """The arguments of a ``mobilenets ...`` (or ``... -m mobilenets ...``) command line."""
    argv = shlex.split(line, comments=True)
    if argv and argv[0].endswith("mobilenets"):
        return argv[1:]
    if "-m" in argv and argv.index("-m") + 1 < len(argv) and argv[argv.index("-m") + 1] == "mobilenets":
        return argv[argv.index("-m") + 2:]
    return None


@pytest.mark.needs_data
def test_readme_quick_blocks_run_as_written(tmp_path, monkeypatch, capsys):
    """Every README block marked ``<!-- test: quick -->``, in order, in one folder (with the
    repository's docs/ beside it, for the example images): each command exits with status 0 and
    prints lines that fit the table width."""
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    monkeypatch.chdir(tmp_path)
    ran = 0
    for m in FENCE.finditer(README.read_text()):
        if m["mark"] != "quick":
            continue
        if m["lang"] == "python":
            exec(compile(m["body"], "README.md", "exec"), {"__name__": "readme"})
            ran += 1
            continue
        assert m["lang"] == "bash", m["body"]
        for line in command_lines(m["body"]):
            argv = mobilenets_argv(line)
            assert argv is not None, f"quick blocks hold mobilenets commands only: {line}"
            unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "", line)  # the shell would expand globs
            assert not any(c in unquoted for c in "*?"), f"no globs in quick blocks: {line}"
            code = main(argv)
            out, err = capsys.readouterr()
            assert code == 0, f"{line}\n{err[-2000:]}"
            wide = [x for x in out.splitlines() if len(x) > TABLE_WIDTH]
            assert not wide, f"{line}: lines wider than {TABLE_WIDTH}: {wide}"
            ran += 1
    assert ran >= 7
    # what the tour says it writes
    for name in ("curves.png", "eval_report.txt", "bag_top3.png", "model_int8.onnx"):
        assert (tmp_path / "runs" / "tour" / name).is_file(), name
    assert (tmp_path / "runs/tour/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_documented_command_line_parses():
    """Every ``mobilenets`` line of a bash block in the README, docs/ and scripts/main.sh parses
    with the real parser (placeholders like ``MODEL`` or ``...`` aside)."""
    parser = build_parser()
    lines = [line for page in PAGES for body in blocks(page, "bash")
             for line in command_lines(body)]
    lines += command_lines((ROOT / "scripts" / "main.sh").read_text())
    checked, bad = 0, []
    for line in lines:
        argv = mobilenets_argv(line.replace('"$OUT"', "runs/main").replace('"$@"', ""))
        if argv is None or any(p in line for p in ("...", "|", "MODEL", "DIR")):
            continue
        try:
            parser.parse_args(argv)
            checked += 1
        except SystemExit:
            bad.append(line)
    assert not bad, bad
    assert checked > 60


def test_the_main_job_evaluates_once():
    """scripts/main.sh: `train` evaluates the final model and keeps the report; no second
    evaluation of the same model (the int8 check compares the export with torch, not this)."""
    commands = [mobilenets_argv(line) for line in
                command_lines((ROOT / "scripts" / "main.sh").read_text())]
    names = [argv[0] for argv in commands if argv]
    assert "train" in names and "eval" not in names
    bench = next(argv for argv in commands if argv and argv[0] == "bench")
    assert "timm" in bench[bench.index("--backends") + 1].split(",")  # the peer column is filled


def test_generated_reference_pages_are_current():
    from mobilenets.cli.docs import pages

    stale = [str(path.relative_to(ROOT)) for path, text in pages().items()
             if not path.is_file() or path.read_text() != text]
    assert not stale, f"{stale} out of date: run python -m mobilenets.cli.docs"


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"(https?:|mailto:|#)", target):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_readme_has_a_table_of_contents_that_matches_its_headings():
    text = README.read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    toc = re.findall(r"^- \[(.+?)\]\(#([^)]+)\)$", text.split("## Contents", 1)[1].split("##")[0],
                     flags=re.M)
    assert [t for t, _ in toc] == [h for h in headings if h != "Contents"]
    for title, anchor in toc:
        assert anchor == re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
