"""A plain model of an OCI image layout and of SEMANTICS.md's rules, for tests/test_stateful.py.

It shares nothing with ``ocigraph``'s planning code on purpose: a test that compares the
product with the core can only find shell bugs, while one that compares it with this model can
also find a wrong rule.  So this module does not import ``ocigraph``; digests come from
``hashlib``, and every rule below is written from SEMANTICS.md (section numbers in comments),
as directly as the prose allows, with sets and loops rather than a graph library.

What it models: the present blob files; every manifest ever pushed (its media type, its
children with their roles, its subject); the ordered index.json entries (digest, media type,
size, tag).  Edges come only from *present* manifests: once a manifest file is gone, what it
referenced is no longer known to anyone reading the layout.  Only the ``default`` policy is
modelled (untagged entries are not roots, referrers cascade, the guard is on).

Where SEMANTICS.md leaves room, the model follows the choices docs/semantics.md records,
each marked "docs/semantics.md" below:

* the guard looks at every node the delete would remove, not only the targets (a cascaded
  referrer that a live index still lists is refused the same way);
* a referrer is not orphaned while its subject stays (it is live through that subject, §2);
* ``untag`` drops the tag's entries, but a digest that would lose its last entry keeps its
  first one, untagged;
* ``remove`` judges liveness as if the removed tag entries were gone; a digest named directly
  means all its tags, and an untagged digest named directly is deleted when it is not live;
* ``gc`` also drops the untagged entries of nodes that are not live (present or not).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Entry:
    """One index.json entry."""

    digest: str
    media_type: str
    size: int
    tag: str | None = None
    artifact_type: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type is not None:
            doc["artifactType"] = self.artifact_type
        if self.tag is not None:
            doc["annotations"] = {REF_NAME: self.tag}
        return doc


@dataclass(frozen=True)
class Manifest:
    """What a pushed manifest references: ``children`` are (digest, role) pairs, role one of
    ``config``, ``layer``, ``manifest``; the subject is kept apart (role ``subject``)."""

    media_type: str
    children: tuple[tuple[str, str], ...]
    subject: str | None = None


class Refused(Exception):
    """The model says the operation must be refused.  ``kind`` is ``unknown``, ``ambiguous``
    or ``guard``; ``names`` are the strings of which the error message must show at least one
    (``ambiguous``: all of them)."""

    def __init__(self, kind: str, names: list[str]) -> None:
        super().__init__(f"{kind}: {', '.join(names)}")
        self.kind = kind
        self.names = names


@dataclass(frozen=True)
class Outcome:
    """What an operation does: the nodes it deletes (present or not) and, by index.json
    position, the entries it drops and the entries it only untags."""

    deleted: frozenset[str] = frozenset()
    dropped: frozenset[int] = frozenset()
    untagged: frozenset[int] = frozenset()


@dataclass
class LayoutModel:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)

    # -- pushing -----------------------------------------------------------------------------

    def add_blob(self, data: bytes) -> str:
        digest = sha256(data)
        self.blobs[digest] = data
        return digest

    def add_manifest(self, doc: dict[str, Any]) -> tuple[str, bytes]:
        """Record a manifest document (OCI image manifest or index) and its blob."""
        data = manifest_bytes(doc)
        media_type = doc["mediaType"]
        children: list[tuple[str, str]] = []
        if media_type == OCI_MANIFEST:
            children.append((doc["config"]["digest"], "config"))
            children.extend((d["digest"], "layer") for d in doc["layers"])
        else:
            children.extend((d["digest"], "manifest") for d in doc["manifests"])
        subject = doc["subject"]["digest"] if "subject" in doc else None
        digest = self.add_blob(data)
        self.manifests[digest] = Manifest(media_type, tuple(children), subject)
        return digest, data

    def add_entry(self, entry: Entry) -> None:
        self.entries.append(entry)

    # -- the graph (SEMANTICS §1) ---------------------------------------------------------------

    def edges(self) -> dict[str, dict[str, set[str]]]:
        """``u -> {v: roles}`` for every present manifest u."""
        out: dict[str, dict[str, set[str]]] = {}
        for u, m in self.manifests.items():
            if u not in self.blobs:
                continue
            succ = out.setdefault(u, {})
            for v, role in m.children:
                succ.setdefault(v, set()).add(role)
            if m.subject is not None:
                succ.setdefault(m.subject, set()).add("subject")
        return out

    def nodes(self) -> set[str]:
        found = set(self.blobs) | {e.digest for e in self.entries}
        for succ in self.edges().values():
            found |= set(succ)
        return found

    def predecessors(self) -> dict[str, dict[str, set[str]]]:
        """``v -> {u: roles}``."""
        pred: dict[str, dict[str, set[str]]] = {}
        for u, succ in self.edges().items():
            for v, roles in succ.items():
                pred.setdefault(v, {})[u] = roles
        return pred

    def referrers(self, node: str, pred: dict[str, dict[str, set[str]]] | None = None) -> set[str]:
        pred = self.predecessors() if pred is None else pred
        return {u for u, roles in pred.get(node, {}).items() if "subject" in roles}

    def subject_of(self, node: str) -> str | None:
        m = self.manifests.get(node)
        return m.subject if m is not None and node in self.blobs else None

    # -- roots and liveness (§2) ------------------------------------------------------------

    def tagged_roots(self, without: frozenset[int] = frozenset()) -> set[str]:
        return {e.digest for i, e in enumerate(self.entries) if e.tag is not None and i not in without}

    def live(self, roots: set[str] | None = None) -> set[str]:
        """The successor closure of the roots, plus, to a fixpoint, every referrer of a live node
        (and what that referrer references)."""
        edges = self.edges()
        pred = self.predecessors()
        live: set[str] = set()
        todo = list(self.tagged_roots() if roots is None else roots)
        while todo:
            n = todo.pop()
            if n in live:
                continue
            live.add(n)
            todo.extend(edges.get(n, {}))
            todo.extend(u for u, roles in pred.get(n, {}).items() if "subject" in roles)
        return live

    def reachable_from_entries(self) -> set[str]:
        """What fsck checks (ocigraph/check.py): the closure from every index.json entry, tagged
        or not, with every referrer of a reachable node, listed or not."""
        return self.live({e.digest for e in self.entries})

    # -- naming things (§1: ambiguous tags) -----------------------------------------------------

    def resolve(self, ref: str) -> str:
        if ref.startswith("sha256:"):
            if ref not in self.nodes():
                raise Refused("unknown", [ref])
            return ref
        digests = sorted({e.digest for e in self.entries if e.tag == ref})
        if not digests:
            raise Refused("unknown", [ref])
        if len(digests) > 1:
            raise Refused("ambiguous", digests)
        return digests[0]

    # -- Delete (§3) --------------------------------------------------------------------------

    def deletion_closure(self, targets: list[str], roots: set[str]) -> set[str]:
        edges, pred = self.edges(), self.predecessors()
        doomed = set(targets)
        grew = True
        while grew:
            grew = False
            # §3.1: referrers of everything doomed, tagged or not, recursively
            for n in list(doomed):
                for r in self.referrers(n, pred):
                    if r not in doomed:
                        doomed.add(r)
                        grew = True
            # §3.2: a successor every predecessor of which is doomed, and that is not a root
            for n in list(doomed):
                for s in edges.get(n, {}):
                    if s in doomed or s in roots:
                        continue
                    if any(p not in doomed for p in pred.get(s, {})):
                        continue
                    subject = self.subject_of(s)
                    if subject is not None and subject not in doomed:
                        continue  # docs/semantics.md: a referrer stays while its subject does
                    doomed.add(s)
                    grew = True
        return doomed

    def check_guard(self, doomed: set[str], live: set[str]) -> None:
        """§3.4: refuse when a live node outside the delete references a doomed one other than
        as its subject (docs/semantics.md: for every doomed node, not only the targets)."""
        pred = self.predecessors()
        holders = sorted({p for n in doomed for p, roles in pred.get(n, {}).items()
                          if p not in doomed and p in live and roles - {"subject"}})
        if holders:
            raise Refused("guard", holders)

    def entries_of(self, nodes: set[str]) -> frozenset[int]:
        return frozenset(i for i, e in enumerate(self.entries) if e.digest in nodes)

    def delete(self, ref: str) -> Outcome:
        target = self.resolve(ref)
        roots = self.tagged_roots()
        doomed = self.deletion_closure([target], roots)
        self.check_guard(doomed, self.live(roots))
        return Outcome(frozenset(doomed), self.entries_of(doomed))  # §3.3

    # -- untag and remove (§3, last paragraphs) -----------------------------------------------

    def tag_positions(self, ref: str) -> tuple[str, frozenset[int]]:
        digest = self.resolve(ref)
        by_digest = ref == digest
        return digest, frozenset(i for i, e in enumerate(self.entries) if e.digest == digest
                                 and e.tag is not None and (by_digest or e.tag == ref))

    def untag_changes(self, positions: frozenset[int]) -> Outcome:
        dropped, untagged = set(), set()
        for digest in {self.entries[p].digest for p in positions}:
            mine = [i for i, e in enumerate(self.entries) if e.digest == digest]
            keep_first = all(i in positions for i in mine)
            for i in mine:
                if i in positions:
                    (untagged if keep_first and i == mine[0] else dropped).add(i)
        return Outcome(dropped=frozenset(dropped), untagged=frozenset(untagged))

    def untag(self, tag: str) -> Outcome:
        return self.untag_changes(self.tag_positions(tag)[1])

    def remove(self, ref: str) -> Outcome:
        digest, removed = self.tag_positions(ref)
        roots = self.tagged_roots(without=removed)
        live = self.live(roots)
        if digest in live:
            return self.untag_changes(removed)
        doomed = self.deletion_closure([digest], roots)
        self.check_guard(doomed, live)
        return Outcome(frozenset(doomed), self.entries_of(doomed))

    # -- GC (§2) ------------------------------------------------------------------------------

    def gc(self) -> Outcome:
        live = self.live()
        listed = {e.digest for e in self.entries}
        garbage = {n for n in self.nodes() - live if n in self.blobs or n in listed}
        return Outcome(frozenset(garbage), self.entries_of(garbage))

    # -- applying an outcome ------------------------------------------------------------------

    def apply(self, outcome: Outcome) -> None:
        self.blobs = {d: b for d, b in self.blobs.items() if d not in outcome.deleted}
        kept = []
        for i, e in enumerate(self.entries):
            if i in outcome.dropped:
                continue
            kept.append(replace(e, tag=None) if i in outcome.untagged else e)
        self.entries = kept
