"""The ``ocigraph(1)`` manual page as roff, from a plain description of the commands.

The shell (:mod:`io_adapters.manpage`) asks click what the commands say of themselves (usage,
help, each option's help record) and hands it here as :class:`ManCommand` values, so the page
cannot drift from the program; arguments, exit status, environment and files are said here.

>>> print(roff(".hidden --x"))
\\&.hidden \\-\\-x
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

__all__ = ["ManCommand", "ManParam", "manual_page", "roff", "page_date"]

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


class ManParam(NamedTuple):
    """An argument (``metavar`` its name, ``help`` maybe empty) or an option as click's help
    record has it: ``names`` (``-o, --output``), ``metavar`` (``PLAN.json``), ``help``."""

    names: str
    metavar: str
    help: str
    is_argument: bool = False


class ManCommand(NamedTuple):
    """A command's subsection: its usage line, its help, its parameters."""

    usage: str
    help: str | None
    params: tuple[ManParam, ...]


def roff(text: str) -> str:
    """``text`` safe as roff: backslashes and hyphens escaped, lines trimmed, and a line that
    would start with a control character (``.`` or ``'``) protected by ``\\&``."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in (raw.strip() for raw in text.split("\n")))


def page_date(source_date_epoch: str) -> str:
    """The page's date from ``$SOURCE_DATE_EPOCH`` (reproducible builds): none unless it is a
    number of seconds.

    >>> page_date("86400"), page_date(""), page_date("yesterday")
    ('1970-01-02', '', '')
    """
    if not source_date_epoch.isdigit():
        return ""
    return datetime.fromtimestamp(int(source_date_epoch), UTC).strftime("%Y-%m-%d")


def _paragraphs(help_text: str | None) -> list[str]:
    """Help as roff paragraphs: `code` in bold; click's ``\\b`` marks one not to refill."""
    out = []
    for para in inspect.cleandoc(help_text or "").split("\f")[0].split("\n\n"):
        keep = para.strip().startswith("\b")
        text = roff(para.strip().removeprefix("\b").strip("\n") if keep else " ".join(para.split()))
        text = re.sub(r"`([^`\n]+)`", r"\\fB\1\\fR", text)
        out += [".PP", ".nf", text, ".fi"] if keep else [".PP", text] if text else []
    return out


def _params(params: Sequence[ManParam]) -> list[str]:
    """A tagged paragraph per argument and option."""
    out = []
    for p in params:
        if p.is_argument:
            out += [".TP", f"\\fI{roff(p.names)}\\fR", roff(p.help or _ARGUMENTS.get(p.names, ""))
                    or "\\&"]
        else:
            tag = f"\\fB{roff(p.names)}\\fR" + (f" \\fI{roff(p.metavar)}\\fR" if p.metavar else "")
            out += [".TP", tag, roff(p.help) or "\\&"]
    return out


def manual_page(prog: str, version: str, date: str, summary: str, description: str | None,
                help_options: Sequence[str], options: Sequence[ManParam],
                commands: Sequence[ManCommand]) -> str:
    """The section 1 manual page of ``prog``, in roff: ``commands`` (subcommands after their
    group) each with its arguments and options, then exit status, environment and files."""
    summary = summary.rstrip(".")
    lines = [f'.TH {roff(prog.upper())} 1 "{date}" "{roff(prog)} {version}" "User Commands"',
             ".SH NAME", f"{roff(prog)} \\- {roff(summary[:1].lower() + summary[1:])}",
             ".SH SYNOPSIS",
             f"\\fB{roff(prog)}\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
             ".SH DESCRIPTION", *_paragraphs(description),
             ".PP", roff(f"Every command takes {', '.join(help_options)}."),
             ".SH OPTIONS", *_params(options), ".SH COMMANDS"]
    for cmd in commands:
        usage = roff(cmd.usage).replace('"', "\\(dq")  # the heading is one quoted macro argument
        lines += [f'.SS "{usage}"', *_paragraphs(cmd.help), *_params(cmd.params)]
    for title, rows in _SECTIONS.items():
        lines.append(f".SH {title}")
        for tag, body in rows:
            lines += [".TP", f"\\fB{roff(tag)}\\fR", roff(body)]
    return "\n".join(lines) + "\n"
