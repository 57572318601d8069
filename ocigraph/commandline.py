"""The command line's pure half (its shell is :mod:`io_adapters.cli`): the verbs, what the
options decide (a policy, prune's rules, what LAYOUT names), what a Ctrl-C line reports and the
status a process exits with.  See docs/design.md and docs/cli.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import present
from ._errors import OcigraphError
from ._policy import Policy
from ._registry import parse_reference
from ._retention import RetentionRules, retention_rules
from ._rules import RetentionRuleError, parse_time

__all__ = ["OptionError", "Verb", "VERBS", "POLICY_OPTIONS", "option_policy", "PRUNE_OPTIONS",
           "prune_rules", "layout_argument", "asks", "ApplyProgress", "exit_status"]


class OptionError(OcigraphError):
    """Options that do not go together, or a value they refuse: the command line says it in one
    line and exits 2 (usage), before anything is read or changed."""


@dataclass(frozen=True, slots=True)
class Verb:
    """An operation as commands: ``ocigraph NAME`` (lock, plan, confirm, apply) and, with a
    ``plan_help``, ``ocigraph plan NAME``."""

    name: str
    refs: str | None  # the REF arguments' metavar; None: the command takes none
    help: str
    plan_help: str | None
    force: bool | None  # policy options with --force (True), without (False); None: none
    confirm: bool = True  # asks (or needs --yes) before it changes anything
    prune: bool = False  # judges tags by prune's keep rules


VERBS = (
    Verb("delete", "TARGET...", "Delete TARGETs (tags or digests) with their referrers and the "
         "blobs only they used.", "Plan deleting TARGETs (tags or digests) with their "
         "referrers and orphans.", force=True),
    Verb("gc", None, "Delete every blob that is not live, and index.json entries of deleted "
         "manifests (and first the quarantined blobs whose keep time is up).",
         "Plan deleting every blob that is not live.", force=False),
    Verb("remove", "REF...", "Untag REFs like `docker rmi`; delete an image left untagged "
         "that nothing live uses.", "Plan `docker rmi`: untag REFs; delete what is left "
         "untagged and not live.", force=True),
    Verb("untag", "REF...", "Remove tags (REF: a tag, or a digest for all its tags); deletes "
         "no blob.", None, force=None, confirm=False),
    Verb("prune", None, "Let go of the tags no keep rule keeps (and images over a space "
         "budget), then gc.", "Plan a prune: which tags the keep rules let go, and the gc "
         "that follows.", force=False, prune=True),
)

#: the policy options' parameter names (:func:`option_policy`'s keywords)
POLICY_OPTIONS = ("preset", "keep_untagged", "grace", "keep_referrers", "force")


def option_policy(preset: str = "default", *, keep_untagged: bool = False,
                  grace: float | None = None, keep_referrers: bool = False, force: bool = False,
                  can_force: bool = False) -> Policy:
    """The policy the policy options ask for: ``preset`` with what each option given changes.
    ``--keep-referrers`` is an :class:`OptionError` where nothing can be forced (gc, prune).

    >>> option_policy("default", keep_referrers=True, can_force=True).cascade_referrers
    False
    >>> option_policy("spec", grace=60.0) == Policy.preset("spec", grace=60.0)
    True
    """
    if keep_referrers and not can_force:
        raise OptionError("--keep-referrers applies to delete and remove: a gc or prune deletes "
                          "what is not live, and a referrer of a live image is live")
    overrides = {"keep_untagged": keep_untagged or None, "grace": grace,
                 "cascade_referrers": False if keep_referrers else None, "force": force or None}
    return Policy.preset(preset, **{k: v for k, v in overrides.items() if v is not None})


#: prune's keep-rule options' parameter names (:func:`prune_rules`'s ``rules``)
PRUNE_OPTIONS = ("keep_last", "keep_within", "keep_tags", "only", "max_size", "age_from")


def prune_rules(rules: dict[str, Any], *, on_registry: bool, now: str | None, clock: float,
                policy: Callable[[], bytes] | None = None) -> tuple[RetentionRules, float]:
    """The retention rules and the time to judge at from prune's options: ``rules`` the keep
    rules by :data:`PRUNE_OPTIONS` name, ``now`` the ``--now`` text (else ``clock``), ``policy``
    reads the ``--policy-file`` (called once the options are known to go together).  Every bad
    value, or a document that cannot be read, is an :class:`OptionError`.  ``--age-from``
    defaults to push on a layout, created on a registry (whose API does not say when an image
    was pushed).

    >>> rules, now = prune_rules({"keep_last": 2}, on_registry=True, now=None, clock=5.0)
    >>> rules.age_from, rules.keep_last, now
    ('created', 2, 5.0)
    """
    if on_registry and rules.get("age_from") == "push":
        raise OptionError("--age-from push: push time is not exposed by the registry API; use "
                          "--age-from created (the image's own date, the default on a registry)")
    rules = {**rules, "age_from": rules.get("age_from") or ("created" if on_registry else "push")}
    try:
        if policy is not None and any(rules.get(k) not in (None, ()) for k in
                                      ("keep_last", "keep_within", "keep_tags")):
            raise RetentionRuleError("--policy-file", None, "cannot be mixed with "
                                     "--keep-last, --keep-within or --keep-tag")
        document = policy() if policy is not None else None
        return (retention_rules(policy=document, **rules),
                parse_time(now) if now is not None else clock)
    except RetentionRuleError as exc:
        raise OptionError(str(exc)) from None
    except OSError as exc:
        raise OptionError(present.error_line(exc)) from None


def layout_argument(text: str, exists: Callable[[str], bool],
                    is_folder: Callable[[str], bool]) -> tuple[str, str | None, bool]:
    """What a LAYOUT argument names: ``(path, ref, registry)``.  A path that ``exists`` is that
    path.  ``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` is a registry repository (kept whole; its
    tag or digest is the ref; a bad reference raises :class:`~ocigraph.RegistryError`).
    ``oci:FOLDER[:REF]``, as skopeo and umoci users type it: the folder is the shortest prefix
    before a colon that ``is_folder`` (a ref such as ``app:1`` has colons of its own); as
    skopeo, all of it when none is.

    >>> layout_argument("oci:lay:app:1", lambda p: False, lambda p: p == "lay")
    ('lay', 'app:1', False)
    >>> layout_argument("oci:new", lambda p: False, lambda p: False)
    ('new', None, False)
    >>> layout_argument("docker://h/r:v1", lambda p: False, lambda p: False)
    ('docker://h/r:v1', 'v1', True)
    """
    if text.startswith("docker://") and not exists(text):
        named = parse_reference(text)
        return text, named.digest or named.tag or None, True
    if text.startswith("oci:") and not exists(text):
        rest = text[4:]
        folder, ref = next(((rest[:at], rest[at + 1:]) for at, c in enumerate(rest)
                            if c == ":" and is_folder(rest[:at])), (rest, ""))
        return folder, ref or None, False
    return text, None, False


def asks(verb: Verb, *, yes: bool, dry_run: bool, can_ask: bool) -> bool:
    """Whether ``ocigraph VERB`` asks before it changes anything (not with ``--yes``, nor for
    a verb that never asks); an :class:`OptionError` when it would ask but cannot (stdin is not
    a terminal) -- unless it is a dry run, which changes nothing.

    >>> gc = VERBS[1]
    >>> asks(gc, yes=False, dry_run=True, can_ask=False)
    True
    >>> asks(gc, yes=True, dry_run=False, can_ask=False)
    False
    """
    ask = verb.confirm and not yes
    if ask and not dry_run and not can_ask:
        raise OptionError(f"`ocigraph {verb.name}` changes the layout: pass --yes to confirm "
                          "(stdin is not a terminal, so ocigraph cannot ask), or --dry-run to "
                          "only see the plan")
    return ask


@dataclass(slots=True)
class ApplyProgress:
    """How far the running command's apply got, as counted, for the line Ctrl-C gets when the
    interruption does not carry apply's exact state (:class:`ocigraph.ApplyInterrupted`).

    >>> state = ApplyProgress(applying=True, total=3)
    >>> state.count(2)
    >>> state.interrupted_line(KeyboardInterrupt()).split(";")[0]
    'interrupted while applying: index.json may already be updated, at least 2 of 3 blobs deleted'
    """

    applying: bool = False
    total: int = 0
    done: int = 0

    def count(self, done: int) -> None:
        self.done = done

    def interrupted_line(self, exc: BaseException) -> str:
        return present.interrupted_line(
            applying=self.applying, index_written=getattr(exc, "index_written", None),
            deleted=getattr(exc, "deleted", self.done), total=getattr(exc, "total", self.total))


def exit_status(exc: SystemExit | OSError) -> tuple[int, str | None]:
    """The status a process exits with after ``exc`` ended the command line, and the last line
    it says: a ``SystemExit``'s int code as it is (``None``: 0), any other code --
    ``sys.exit("message")`` -- 1 and the text, as Python itself would print it; an ``OSError``
    (writing --help or --version output, before any command ran) 1 and that error.

    >>> [exit_status(SystemExit(code)) for code in (None, 2, "bye")]
    [(0, None), (2, None), (1, 'bye')]
    >>> exit_status(BrokenPipeError(32, "Broken pipe"))
    (1, 'ocigraph: error: cannot write the output (Broken pipe)')
    """
    if isinstance(exc, OSError):
        return 1, f"ocigraph: error: cannot write the output ({exc.strerror or exc})"
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0, None
    return 1, str(exc.code)
