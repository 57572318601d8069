"""Shell completion of TARGET and REF arguments: the tags and digests of the layout named
earlier on the command line.

click completes commands and options by itself (``_OCIGRAPH_COMPLETE=bash_source ocigraph``
prints the script; zsh and fish likewise); :func:`complete_refs`, given to an argument as
``shell_complete=complete_refs``, adds what only the layout knows.  It reads index.json and
nothing else, through :class:`io_adapters.layout.LayoutDir`, and never fails: a layout that
cannot be read completes to nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from click.shell_completion import CompletionItem

from .layout import LayoutDir

__all__ = ["SHORT_HEX", "complete_refs", "ref_candidates"]

#: hex characters of a short digest (as the text output prints them; ocigraph expands them)
SHORT_HEX = 12


def ref_candidates(layout: Path | str) -> list[tuple[str, str, bool]]:
    """``(value, help, is_digest)`` for the layout's index.json entries: every tag (sorted,
    its help the short digest it names), then every digest, whole (its help its tags)."""
    with LayoutDir(Path(os.path.expanduser(layout))) as layout_dir:
        index = layout_dir.read_index()
    tags: dict[str, set[str]] = {}
    for e in index.entries:
        tags.setdefault(e.digest, set()).update(() if e.tag is None else (e.tag,))
    shorts = {d: d[:d.index(":") + 1 + SHORT_HEX] for d in tags}
    return ([(t, shorts[d], False) for t, d in sorted((t, d) for d, ts in tags.items() for t in ts)]
            + [(d, ", ".join(sorted(tags[d])) or "untagged", True) for d in sorted(tags)])


def complete_refs(ctx: click.Context, param: click.Parameter,
                  incomplete: str) -> list[CompletionItem]:
    """The tags and digests of the layout ``ctx.params["layout"]`` that start with
    ``incomplete``, less those already given to ``param``.  Digests are offered short, or
    whole once ``incomplete`` is longer than the short form.  Any error: no completions."""
    try:
        candidates = ref_candidates(ctx.params["layout"])
    except Exception:  # never a traceback in the middle of the user's prompt
        return []
    given = set(ctx.params.get(param.name or "") or ())
    items: list[CompletionItem] = []
    for value, help_text, is_digest in candidates:
        cut = value.find(":") + 1 + SHORT_HEX
        if is_digest and len(incomplete) <= cut:
            value = value[:cut]
        if value.startswith(incomplete) and value not in given:
            given.add(value)  # a tag two entries give to two digests is offered once
            items.append(CompletionItem(value, help=help_text))
    return items
