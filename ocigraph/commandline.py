"""The command line's pure half (its shell is :mod:`io_adapters.cli`): the verbs, the options
each command takes, what they decide (a policy, prune's rules, what LAYOUT names), what a Ctrl-C
line reports and the status a process exits with.  See docs/design.md and docs/cli.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import present
from ._errors import OcigraphError
from ._plan import Plan
from ._policy import PRESETS, Policy
from ._registry import parse_reference
from ._retention import RetentionRules, retention_rules
from ._rules import RetentionRuleError, parse_time

__all__ = ["OptionError", "Verb", "VERBS", "OptionKind", "Option", "verb_options",
           "COMMAND_OPTIONS", "REGISTRY_OPTIONS", "POLICY_OPTIONS", "option_policy",
           "PRUNE_OPTIONS", "prune_rules", "layout_argument", "asks", "ApplyProgress",
           "exit_status"]


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

OptionKind = Literal["flag", "text", "bool", "choice", "count", "seconds", "duration", "path",
                     "file"]


@dataclass(frozen=True, slots=True)
class Option:
    """A command-line option as data (:mod:`io_adapters.cli` makes each a click option):
    ``flags`` as typed, ``dest`` the parameter it fills, ``kind`` what its value is -- a flag
    (none), text, a bool, a choice of ``choices``, a count (an int >= 0), seconds (a number
    >= 0), a duration (``30s``, ``2d``), a path, or a file (a path that is not a folder)."""

    flags: tuple[str, ...]
    dest: str
    kind: OptionKind
    help: str
    metavar: str | None = None
    default: Any = None  # None: a flag off, a repeatable option empty, any other None
    choices: tuple[str, ...] = ()
    multiple: bool = False  # repeatable: its parameter is a tuple
    show_default: bool = False
    hidden: bool = False
    flag_value: int | None = None  # a flag that sets ``dest`` to this (flags sharing a dest)


def _format(*choices: str) -> Option:
    return Option(("--format",), "fmt", "choice", "Output format.", choices=choices,
                  default=choices[0], show_default=True)


_TEXT_OR_JSON = _format("text", "json")
_DRY_RUN = Option(("--dry-run",), "dry_run", "flag", "Print the plan; change nothing.")
_YES = Option(("--yes", "-y"), "yes", "flag", "Do not ask for confirmation.")
_OUTPUT = Option(("-o", "--output"), "output", "file", "Also write the plan JSON here.",
                 metavar="PLAN.json")
_KEEP_DELETED = Option(
    ("--keep-deleted",), "keep_deleted", "duration", "Keep the deleted blobs this long in the "
    "layout's quarantine (`ocigraph restore` undoes the apply until then; the next gc after it "
    "purges them).  Layouts only.", metavar="DURATION")
_LOCK_TIMEOUT = Option(("--lock-timeout",), "lock_timeout", "seconds", "How long to wait for "
                       "another ocigraph working on the layout.", metavar="SECONDS",
                       default=10.0, show_default=True)
_VERBOSITY = (
    Option(("-v", "--verbose"), "verbosity", "flag",
           "List every deletion (text lists 50 per reason).", default=0, flag_value=1),
    Option(("-q", "--quiet"), "verbosity", "flag", "Print only errors and the one-line result.",
           flag_value=-1))
_REGISTRY = (
    Option(("--tls-verify",), "tls_verify", "bool", "For docker:// targets: verify TLS (false "
           "also allows plain HTTP).", default=True, show_default=True),
    Option(("--creds",), "creds", "text", "For docker:// targets: credentials.",
           metavar="USER:PASS"),
    Option(("--authfile",), "authfile", "path",
           "For docker:// targets: an auth.json (else $REGISTRY_AUTH_FILE, ...)."))
_PRUNE = (
    Option(("--keep-last",), "keep_last", "count", "Keep the tags of the N most recently pushed "
           "images per repository.", metavar="N"),
    Option(("--keep-within",), "keep_within", "text", "Keep tags whose image was pushed within "
           "DURATION (30d, 12h, 2w).", metavar="DURATION"),
    Option(("--keep-tag",), "keep_tags", "text", "Keep tags whose tag part matches GLOB "
           "(repeatable).", metavar="GLOB", multiple=True),
    Option(("--only",), "only", "text", "Judge only ref names matching GLOB; keep every other "
           "(repeatable).", metavar="GLOB", multiple=True),
    Option(("--max-size",), "max_size", "text", "Then expire the oldest images until live blobs "
           "fit (500M, 10G).", metavar="SIZE"),
    Option(("--policy-file",), "policy_file", "file", "An ECR lifecycle policy document (JSON)."),
    Option(("--age-from",), "age_from", "choice", "An image's age: from its push (the manifest "
           "blob's mtime; the default on a layout) or its own created date (the default on a "
           "registry).", choices=("push", "created")),
    Option(("--now",), "now_text", "text", "Judge as of this time (reproducible plans).",
           metavar="RFC3339"))
_PRESET = Option(("--policy",), "preset", "choice", "Policy preset: what is live (see "
                 "docs/cli.md).", choices=tuple(sorted(PRESETS)), default="default",
                 show_default=True)
_KEEP_UNTAGGED = Option(("--keep-untagged",), "keep_untagged", "flag",
                        "Every index.json entry is a root, tagged or not.")
_GRACE = Option(("--grace",), "grace", "duration",
                "Blobs younger than this are live (30s, 10m, 1h, 2d, or seconds).")


def _policy_options(force: bool) -> tuple[Option, ...]:
    """The policy options, ``--force`` where a verb can force (else ``--keep-referrers`` is
    hidden, and refused: :func:`option_policy`)."""
    referrers = Option(("--keep-referrers",), "keep_referrers", "flag",
                       "Do not cascade a delete to the target's referrers.", hidden=not force)
    forcing = Option(("--force",), "force", "flag", "Delete even when a live index or manifest "
                     "still references the target.")
    return (_PRESET, _KEEP_UNTAGGED, referrers, _GRACE, *([forcing] if force else []))


def verb_options(verb: Verb, one_shot: bool) -> tuple[Option, ...]:
    """The options of ``ocigraph VERB`` (``one_shot``: it applies) or ``ocigraph plan VERB``,
    in the order its help lists them.

    >>> [o.flags[0] for o in verb_options(VERBS[3], one_shot=True)][:4]
    ['--format', '--dry-run', '--lock-timeout', '--keep-deleted']
    """
    mode = ((_DRY_RUN, *([_YES] if verb.confirm else []), _LOCK_TIMEOUT, _KEEP_DELETED)
            if one_shot else (_OUTPUT,))
    return (*(_PRUNE if verb.prune else ()),
            *(_policy_options(verb.force) if verb.force is not None else ()),
            _TEXT_OR_JSON, *mode, *_VERBOSITY, *_REGISTRY)


#: the options of the commands that are not verbs, by name, in the order their help lists them
COMMAND_OPTIONS: dict[str, tuple[Option, ...]] = {
    "show": (_format("text", "json", "mermaid", "dot"), _PRESET, _KEEP_UNTAGGED, *_REGISTRY),
    "apply": (_TEXT_OR_JSON, _LOCK_TIMEOUT, _KEEP_DELETED, *_VERBOSITY, *_REGISTRY),
    "restore": (_TEXT_OR_JSON, _LOCK_TIMEOUT),
    "fsck": (_TEXT_OR_JSON,),
    "du": (_TEXT_OR_JSON, _PRESET, _KEEP_UNTAGGED, _GRACE,
           Option(("--sort",), "sort", "choice", "Order of the tag lines (sizes: largest first).",
                  choices=("tag", "total", "unique", "shared"), default="tag", show_default=True),
           Option(("--bytes",), "in_bytes", "flag", "Sizes in bytes, not KiB/MiB/GiB."),
           *_REGISTRY),
    "cache": (_TEXT_OR_JSON,),
}

#: the registry options' parameter names (a registry target's keywords)
REGISTRY_OPTIONS = tuple(o.dest for o in _REGISTRY)

#: the policy options' parameter names (:func:`option_policy`'s keywords)
POLICY_OPTIONS = tuple(o.dest for o in _policy_options(force=True))


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


#: prune's keep-rule options' parameter names (:func:`prune_rules`'s ``rules``): its options
#: but the two it takes apart, ``now`` and ``policy``
PRUNE_OPTIONS = tuple(o.dest for o in _PRUNE if o.dest not in ("policy_file", "now_text"))


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

    def start(self, plan: Plan, *, applying: bool) -> None:
        """``plan``'s apply begins: ``total`` the present blobs it deletes, none deleted yet
        (``applying``: whether Ctrl-C's line says how far it got)."""
        self.applying, self.total, self.done = applying, sum(d.present for d in plan.deletions), 0

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
