"""What the shell offers a user: completion of TARGET/REF arguments (``complete_refs``),
through click's own completion machinery on a throwaway command shaped like ``ocigraph delete
LAYOUT TARGET...``; and the manual page (io_adapters/manpage.py), formatted by man(1)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from builder import two_images_and_a_signature, write_layout
from click.shell_completion import BashComplete, CompletionItem
from click.testing import CliRunner

from io_adapters.cli import cli, complete_refs
from io_adapters.manpage import render_man
from ocigraph.manpage import roff
from ocigraph.present import SHORT_HEX


@click.command()
@click.argument("layout", type=click.Path(path_type=Path))
@click.argument("refs", nargs=-1, shell_complete=complete_refs)
def tiny(layout: Path, refs: tuple[str, ...]) -> None:
    """Stands for delete, remove, untag and plan ...: LAYOUT, then refs."""


def short(digest: str) -> str:
    return digest[:len("sha256:") + SHORT_HEX]


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """``app:1`` (also ``latest``) and ``app:0``, and an untagged entry of a third image."""
    b, d = two_images_and_a_signature()
    b.entry(d["img"], "latest")
    untagged = b.manifest(layers=[b.blob("untagged")])
    b.entry(untagged)
    root = write_layout(tmp_path / "layout", b.index_json(), b.blobs)
    return root, {"img": d["img"]["digest"], "old": d["old"]["digest"],
                  "untagged": untagged["digest"]}


def complete(args: list[str], incomplete: str) -> list[CompletionItem]:
    return BashComplete(tiny, {}, "tiny", "_TINY_COMPLETE").get_completions(args, incomplete)


def values(args: list[str], incomplete: str) -> list[str]:
    return [item.value for item in complete(args, incomplete)]


def test_tags_then_short_digests_of_the_layout_named_before(layout):
    root, d = layout
    digests = sorted(d.values())
    assert values([str(root)], "") == ["app:0", "app:1", "latest", *map(short, digests)]
    items = {item.value: item.help for item in complete([str(root)], "")}
    assert items["latest"] == items["app:1"] == short(d["img"])
    assert items[short(d["img"])] == "app:1, latest"
    assert items[short(d["untagged"])] == "untagged"
    assert all(item.type == "plain" for item in complete([str(root)], ""))


def test_what_is_offered_starts_with_what_was_typed(layout):
    root, d = layout
    assert values([str(root)], "app") == ["app:0", "app:1"]
    assert values([str(root)], "la") == ["latest"]
    assert values([str(root)], "sha256:") == sorted(map(short, d.values()))
    assert values([str(root)], short(d["old"])[:10]) == [short(d["old"])]
    assert values([str(root)], "nothing-like-it") == []


def test_a_digest_typed_beyond_its_short_form_completes_whole(layout):
    root, d = layout
    assert values([str(root)], d["old"][:len(short(d["old"])) + 3]) == [d["old"]]
    assert values([str(root)], d["old"]) == [d["old"]]


def test_refs_already_given_are_not_offered_again(layout):
    root, d = layout
    assert values([str(root), "app:1"], "app") == ["app:0"]
    assert short(d["img"]) not in values([str(root), short(d["img"])], "sha256:")


def test_a_tag_given_to_two_digests_is_offered_once(tmp_path):
    b, d = two_images_and_a_signature()
    b.entry(d["old"], "app:1")  # app:1 now names two digests
    root = write_layout(tmp_path / "layout", b.index_json(), b.blobs)
    assert values([str(root)], "app:1") == ["app:1"]


def test_a_home_relative_layout_is_found(layout, monkeypatch):
    root, _ = layout
    monkeypatch.setenv("HOME", str(root.parent))
    assert values(["~/layout"], "la") == ["latest"]


@pytest.mark.parametrize("what", ["missing", "a file", "no index.json", "index.json broken",
                                  "index.json a folder", "a symlink"])
def test_a_layout_that_cannot_be_read_completes_to_nothing(layout, tmp_path, what):
    root, _ = layout
    target = {"missing": tmp_path / "nowhere", "a file": root / "oci-layout",
              "a symlink": tmp_path / "link"}.get(what, root)
    if what == "no index.json":
        (root / "index.json").unlink()
    elif what == "index.json broken":
        (root / "index.json").write_bytes(b'{"manifests": [')
    elif what == "index.json a folder":
        (root / "index.json").unlink()
        (root / "index.json").mkdir()
    elif what == "a symlink":
        target.symlink_to(root)
    assert values([str(target)], "") == []


def test_without_a_layout_yet_nothing_of_ours_is_offered():
    assert [item.type for item in complete([], "")] == ["file"]  # click completes LAYOUT
    assert complete_refs(click.Context(tiny), tiny.params[1], "") == []


def test_called_directly_with_a_context(layout):
    root, _ = layout
    ctx = click.Context(tiny)
    ctx.params = {"layout": root, "refs": ("latest",)}
    assert [item.value for item in complete_refs(ctx, tiny.params[1], "")][:2] == ["app:0", "app:1"]


@pytest.mark.parametrize(("shell", "cword", "expected"), [
    ("bash", "2", "plain,app:1\n"), ("zsh", "2", "plain\napp\\:1\nsha256:"),
    ("fish", "app:", "plain,app:1\tsha256:")])
def test_the_shell_protocol_carries_them(layout, shell, cword, expected):
    root, _ = layout
    env = {"_TINY_COMPLETE": f"{shell}_complete", "COMP_WORDS": f"tiny {root} app:",
           "COMP_CWORD": cword}
    result = CliRunner().invoke(tiny, [], env=env, prog_name="tiny")
    assert result.exit_code == 0
    assert expected in result.output and "latest" not in result.output


# -- the manual page ------------------------------------------------------------------------------

def _command_paths(group: click.Group, path: list[str]) -> list[list[str]]:
    ctx = click.Context(group)
    out = []
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        out.append([*path, name])
        if isinstance(sub, click.Group):
            out += _command_paths(sub, [*path, name])
    return out


def _section(page: str, heading: str) -> str:
    """The roff of one COMMANDS subsection (``.SS "ocigraph delete ..."`` to the next)."""
    start = page.index(f'.SS "{heading} ')
    ends = [i for i in (page.find(".SS ", start + 1), page.find(".SH ", start + 1)) if i > 0]
    return page[start:min(ends)]


def _formatted(page: str, tmp_path: Path) -> subprocess.CompletedProcess[str] | None:
    """The page formatted as text by man(1), else groff(1), with every warning on; ``None``
    when neither is installed."""
    source = tmp_path / "page.1"
    source.write_text(page)
    env = {**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat", "LC_ALL": "C.UTF-8"}
    if shutil.which("man"):
        cmd = ["man", "--warnings=all", "-l", str(source)]
    elif shutil.which("groff"):
        cmd = ["groff", "-man", "-Tutf8", "-ww", str(source)]
    else:
        return None
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    done.stdout = re.sub(r".\x08", "", done.stdout).replace("\u2212", "-").replace("\u2010", "-")
    return done


def test_the_page_names_every_command_and_every_option_of_delete():
    page = render_man(cli)
    paths = _command_paths(cli, ["ocigraph"])
    assert ["ocigraph", "plan", "delete"] in paths and len(paths) >= 12
    for path in paths:
        assert f'.SS "{" ".join(path)} ' in page, path
    delete = _section(page, "ocigraph delete")
    options = [o for p in cli.commands["delete"].params if isinstance(p, click.Option)
               for o in (*p.opts, *p.secondary_opts)]
    assert {"--dry-run", "--yes", "-y", "--force", "--policy", "--lock-timeout"} <= set(options)
    for option in options:
        assert roff(option) in delete, option
    for p in cli.commands["delete"].params:
        if isinstance(p, click.Option) and p.help:
            assert roff(p.help.split("(")[0]) in delete, p.help
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS",
                    "ENVIRONMENT", "FILES"):
        assert f"\n.SH {heading}\n" in page
    status = page[page.index(".SH EXIT STATUS"):page.index(".SH ENVIRONMENT")]
    assert re.findall(r"\\fB(\d+)\\fR", status) == ["0", "1", "2", "130"]
    environment = page[page.index(".SH ENVIRONMENT"):page.index(".SH FILES")]
    for var in ("OCIGRAPH_CACHE_DIR", "OCIGRAPH_NO_CACHE", "OCIGRAPH_DEBUG", "OCIGRAPH_CACHE_MAX"):
        assert f"\\fB{var}\\fR" in environment
    assert "~/.cache/ocigraph" in page[page.index(".SH FILES"):]


def test_roff_escapes_backslashes_hyphens_and_leading_control_characters():
    assert roff(".hidden\n'quoted\n  .indented\nback\\slash -x") == (
        "\\&.hidden\n\\&'quoted\n\\&.indented\nback\\eslash \\-x")
    assert roff("a.b 'c'") == "a.b 'c'"  # only the start of a line is a control position


@click.group(help=".git folders are kept.\n\n'Quoted' too; C:\\temp\\new and \\fBbold\\fR stay.")
def odd() -> None:
    pass


@odd.command(help=".dotted help of a command")
@click.option("--path", help="'.' and \\ as they are")
def sub(path: str) -> None:
    pass


def test_help_that_looks_like_roff_is_printed_as_it_is(tmp_path):
    page = render_man(odd, prog="odd")
    macros = {".TH", ".SH", ".SS", ".PP", ".TP", ".nf", ".fi"}
    assert all(line.split(" ")[0] in macros for line in page.splitlines() if line[:1] in ".'")
    done = _formatted(page, tmp_path)
    if done is None:
        pytest.skip("neither man nor groff is installed")
    assert done.returncode == 0 and done.stderr == ""
    text = " ".join(done.stdout.split())
    for said in (".git folders are kept.", "'Quoted' too; C:\\temp\\new and \\fBbold\\fR stay.",
                 ".dotted help of a command", "--path", "'.' and \\ as they are"):
        assert said in text, said


def test_man_formats_the_real_page_without_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    page = render_man(cli)
    assert page.startswith('.TH OCIGRAPH 1 "2023-11-14" "ocigraph ')
    done = _formatted(page, tmp_path)
    if done is None:
        pytest.skip("neither man nor groff is installed")
    assert done.returncode == 0
    assert done.stderr == ""
    text = " ".join(done.stdout.split())
    assert "ocigraph plan delete [OPTIONS] LAYOUT TARGET..." in text
    assert "--lock-timeout SECONDS" in text and "OCIGRAPH_CACHE_MAX" in text


def test_python_m_io_adapters_manpage_prints_the_page(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    done = subprocess.run([sys.executable, "-m", "io_adapters.manpage"], capture_output=True,
                          text=True, cwd=Path(__file__).parent.parent, timeout=120, check=True)
    assert done.stdout == render_man(cli) and done.stderr == ""
