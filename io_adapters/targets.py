"""What a command works on, a layout folder or a registry repository: one face over both
adapters, answering with :mod:`ocigraph.answers`' values.  See docs/design.md."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ocigraph as og
from ocigraph import present
from ocigraph.answers import Planned, Read

from . import background, quarantine
from .apply import apply_plan
from .layout import LayoutDir, LayoutLock, read_layout
from .planner import Prune, plan_layout, restore_later

__all__ = ["LayoutTarget", "RegistryTarget", "Prune"]


class LayoutTarget:
    """A layout folder, through one directory handle."""

    is_registry = False
    report_text = staticmethod(present.format_report_text)

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.dir = LayoutDir(path)
        self.lock: LayoutLock | None = None

    def close(self) -> None:
        """Nothing to close: the handle lives as long as the command."""

    def locked(self, timeout: float) -> LayoutLock:
        """The layout's lock, for a ``with`` block: settle and apply use it while it is held."""
        self.lock = LayoutLock(self.dir, timeout)
        return self.lock

    def settle(self, *, purge: bool) -> tuple[int, int]:
        """Under the lock, before reading: finish what a killed apply left, and with ``purge``
        remove the quarantines whose keep time is up; (blobs, bytes) purged."""
        done = (quarantine.purge_expired if purge else quarantine.recover)(self.dir, lock=self.lock)
        return (done.purged, done.purged_bytes) if purge else (0, 0)

    def read(self, reporter: og.Reporter | None = None, *, mtimes: bool = False) -> Read:
        disk = read_layout(self.dir)
        with background.collector_paused():
            graph = og.build_graph(disk.layout, reporter, file_sizes=True, mtimes=mtimes)
        return Read.of(graph, disk.junk, [q.to_dict() for q in quarantine.quarantined(self.dir)])

    def plan(self, operation: str, refs: Sequence[str], policy: og.Policy,
             prune: Prune | None, reporter: og.Reporter | None = None) -> Planned:
        """From the layout's store when it describes it, else by reading it."""
        p = plan_layout(self.dir, operation, refs, policy, prune=prune, reporter=reporter,
                        defer=background.defer)
        return Planned(p.plan, p.tags, len(p.junk))

    def apply(self, plan: og.Plan, *, progress: Callable[[int], None] | None = None,
              lock_timeout: float = 10.0, keep: float | None = None,
              verify: bool = False) -> dict[str, Any]:
        """Apply ``plan`` (under the lock held, else one taken); the report document."""
        report = apply_plan(self.dir, plan, lock=self.lock, lock_timeout=lock_timeout,
                            progress=progress, verify=verify, keep_deleted=keep)
        restore_later(self.dir, defer=background.defer, applied=(plan, report))
        return present.report_document(str(self.path), plan, report.to_dict())


class RegistryTarget:
    """A registry repository ``docker://HOST[:PORT]/REPO``, with one client for the command."""

    is_registry = True
    report_text = staticmethod(present.format_registry_report_text)

    def __init__(self, text: str, *, tls_verify: bool = True, creds: str | None = None,
                 authfile: Path | None = None) -> None:
        from . import registry as reg

        self.reg, self.name = reg, text
        self.ref = og.parse_reference(text)
        self.client = reg.RegistryClient(self.ref.host, tls_verify=tls_verify,
                                         credentials=creds, auth_file=authfile)

    def close(self) -> None:
        self.client.close()

    def locked(self, timeout: float) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()  # the registry checks each tag again before a delete

    def settle(self, *, purge: bool) -> tuple[int, int]:
        return 0, 0

    def read(self, reporter: og.Reporter | None = None, *, mtimes: bool = False) -> Read:
        snapshot = self.reg.read_repository(self.ref, client=self.client)
        return Read.of(og.build_graph(snapshot.layout))

    def plan(self, operation: str, refs: Sequence[str], policy: og.Policy,
             prune: Prune | None, reporter: og.Reporter | None = None) -> Planned:
        """An unknown ref names host and repository; prune ages images by their own date."""
        if prune is not None:
            plan, graph = self.reg.plan_prune_repository(self.ref, *prune, client=self.client,
                                                         policy=policy, reporter=reporter)
        else:
            plan, graph = self.reg.plan_repository(self.ref, operation, refs, policy,
                                                   client=self.client, reporter=reporter)
        return Planned(plan, og.plan_tags(graph, plan))

    def apply(self, plan: og.Plan, **_: Any) -> dict[str, Any]:
        """Apply ``plan`` to the repository; the report document (blobs are left to the
        registry's own garbage collection)."""
        r = self.reg.apply_plan(self.ref, plan, client=self.client)
        return present.registry_report_document(r.deleted, r.untagged,
                                                [(k.what, k.reason) for k in r.skipped],
                                                r.bytes_unreferenced, r.gc_hint)
