"""The ``ocigraph(1)`` manual page: ``python -m io_adapters.manpage > ocigraph.1``.

What the commands say of themselves (help, usage, options, defaults) comes from click, so the
page cannot drift from the program; arguments, exit status, environment and files are said here.
"""

from __future__ import annotations

import inspect
import os
import re
import time
from importlib import metadata

import click

__all__ = ["render_man", "roff"]

_ARGUMENTS = {
    "LAYOUT": "An OCI image layout: a folder with oci-layout, index.json and blobs/.",
    "TARGET...": "Tags or digests to delete (a digest may be cut to a unique 4+ hex prefix).",
    "REF...": "Tags, or digests (each meaning all of its tags).",
    "PLAN.json": "A plan written by ocigraph plan -o, or - for standard input.",
}
_SECTIONS = {
    "EXIT STATUS": [
        ("0", "Done; also a dry run or a plan, whatever it found, and fsck finding nothing."),
        ("1", "Refused or failed, said in one line on standard error: the guard refused, an "
              "unknown tag, a stale plan, a locked or broken layout, fsck found problems."),
        ("2", "Usage: an unknown command or option, a missing argument, a bad option value, or "
              "a change without --yes when standard input is not a terminal."),
        ("130", "Interrupted (SIGINT, Ctrl-C).")],
    "ENVIRONMENT": [
        ("OCIGRAPH_CACHE_DIR", "The cache folder (see FILES)."),
        ("OCIGRAPH_NO_CACHE", "Set to 1 to neither use nor write the cache: every command reads "
                              "the layout (for file systems whose folder times never change)."),
        ("OCIGRAPH_CACHE_MAX", "The most the cache may hold, as 500M or 2G (binary units; "
                               "default 1G); beyond it the least recently used entries go."),
        ("OCIGRAPH_DEBUG", "Set to 1 for the Python traceback instead of the one-line error.")],
    "FILES": [
        ("$OCIGRAPH_CACHE_DIR, else $XDG_CACHE_HOME/ocigraph, else ~/.cache/ocigraph",
         "Per layout, one file: a store of its graph and recent plans (<hash>.store, also its "
         "writers' lock): a command on an unchanged layout answers without reading it all.  "
         "Entries unused for 30 days or whose layout is gone are removed; ocigraph cache lists "
         "them, ocigraph cache clear removes them.  Deleting the folder is always safe.")],
}


def roff(text: str) -> str:
    """``text`` safe as roff: backslashes and hyphens escaped, lines trimmed, and a line that
    would start with a control character (``.`` or ``'``) protected by ``\\&``."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in (raw.strip() for raw in text.split("\n")))


def _paragraphs(help_text: str | None) -> list[str]:
    """Help as roff paragraphs: `code` in bold; click's ``\\b`` marks one not to refill."""
    out = []
    for para in inspect.cleandoc(help_text or "").split("\f")[0].split("\n\n"):
        keep = para.strip().startswith("\b")
        text = roff(para.strip().removeprefix("\b").strip("\n") if keep else " ".join(para.split()))
        text = re.sub(r"`([^`\n]+)`", r"\\fB\1\\fR", text)
        out += [".PP", ".nf", text, ".fi"] if keep else [".PP", text] if text else []
    return out


def _params(cmd: click.Command, ctx: click.Context) -> list[str]:
    """A tagged paragraph per argument and visible option of ``cmd``."""
    out = []
    for param in cmd.params:
        if isinstance(param, click.Argument):
            name, body = param.human_readable_name, getattr(param, "help", None)
            out += [".TP", f"\\fI{roff(name)}\\fR", roff(body or _ARGUMENTS.get(name, "")) or "\\&"]
        elif (record := param.get_help_record(ctx)) is not None:
            names, _, metavar = record[0].partition(" ")
            tag = f"\\fB{roff(names)}\\fR" + (f" \\fI{roff(metavar)}\\fR" if metavar else "")
            out += [".TP", tag, roff(record[1]) or "\\&"]
    return out


def _commands(group: click.Group, ctx: click.Context, path: list[str]) -> list[str]:
    """A COMMANDS subsection per visible command of ``group``, subcommands after their group."""
    lines = []
    for name in group.list_commands(ctx):
        if (cmd := group.get_command(ctx, name)) is not None and not cmd.hidden:
            sub = click.Context(cmd, info_name=name, parent=ctx)
            usage = roff(" ".join([*path, name, *cmd.collect_usage_pieces(sub)]))
            usage = usage.replace('"', "\\(dq")  # the heading is one quoted macro argument
            lines += [f'.SS "{usage}"', *_paragraphs(cmd.help), *_params(cmd, sub)]
            if isinstance(cmd, click.Group):
                lines += _commands(cmd, sub, [*path, name])
    return lines


def render_man(group: click.Group, prog: str = "ocigraph") -> str:
    """The section 1 manual page of ``group``, in roff: every command and subcommand with its
    arguments and options.  Dated by ``$SOURCE_DATE_EPOCH`` if set (reproducible builds)."""
    ctx = click.Context(group, info_name=prog, **group.context_settings)
    version = next((d.version for d in metadata.distributions(name=prog)), "")
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch))) if epoch.isdigit() else ""
    summary = group.get_short_help_str(limit=200).rstrip(".")
    lines = [f'.TH {roff(prog.upper())} 1 "{date}" "{roff(prog)} {version}" "User Commands"',
             ".SH NAME", f"{roff(prog)} \\- {roff(summary[:1].lower() + summary[1:])}",
             ".SH SYNOPSIS",
             f"\\fB{roff(prog)}\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
             ".SH DESCRIPTION", *_paragraphs(group.help),
             ".PP", roff(f"Every command takes {', '.join(ctx.help_option_names)}."),
             ".SH OPTIONS", *_params(group, ctx), ".SH COMMANDS", *_commands(group, ctx, [prog])]
    for title, rows in _SECTIONS.items():
        lines.append(f".SH {title}")
        for tag, body in rows:
            lines += [".TP", f"\\fB{roff(tag)}\\fR", roff(body)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from .cli import cli
    click.echo(render_man(cli), nl=False)
