"""ocigraph: plan garbage collection on OCI image layouts, as pure functions over a graph.

The core is I/O-free: bytes and values in, a frozen networkx graph and immutable plans out.
``io_adapters`` reads layouts from disk and applies plans back.

>>> import ocigraph as og
>>> layout = og.layout_from_bytes(b'{"schemaVersion": 2, "manifests": []}', {})
>>> og.plan_gc(og.build_graph(layout)).is_empty
True
"""

from ._build import (
    NODE_ATTRIBUTES,
    NODE_SCHEMA,
    NodeAttribute,
    build_graph,
    decode_node_attrs,
    encode_node_attrs,
    encode_node_columns,
)
from ._digest import (
    SWEEPABLE_ALGORITHMS,
    are_digest_names,
    blob_parts,
    digest_bytes,
    is_sweepable,
    parse_digest,
    printable,
    short_digest,
)
from ._distribution import (
    EMPTY_DESCRIPTOR,
    RETRY_STATUSES,
    FailureKind,
    FallbackIndex,
    Repository,
    RepositoryChanges,
    RepositoryReader,
    auth_config_credentials,
    describe_failure,
    error_code,
    fallback_subject,
    fallback_tag,
    images_to_date,
    index_descriptors,
    manifest_identity,
    manifest_successors,
    next_link,
    next_tags_page,
    parse_challenge,
    repository_changes,
    repository_layout,
    retry_after,
    throwaway_manifest,
    without_referrers,
)
from ._ecr import (
    LifecycleImage,
    LifecyclePolicy,
    LifecycleRule,
    LifecycleVerdict,
    evaluate_lifecycle,
    parse_lifecycle_policy,
)
from ._errors import (
    AmbiguousRefError,
    BrokenManifestError,
    GuardError,
    InvalidDigestError,
    InvalidIndexError,
    LayoutError,
    OcigraphError,
    PlanFormatError,
    RequestError,
    StalePlanError,
    UnknownRefError,
)
from ._graph import (
    LayoutGraph,
    NeighbourhoodView,
    is_young,
    live_set,
    referrers_of,
    roots,
    successors_of,
    tags_of,
    why_live,
    young_nodes,
)
from ._listing import (
    JUNK_KINDS,
    NO_LAYOUT_HERE,
    BlobManifestSource,
    FileStat,
    Junk,
    ListedBlobs,
    algorithm_folder_junk,
    blob_name,
    blob_names,
    entry_junk,
    flock_holder,
    is_disk_error,
    not_a_layout,
    oci_layout_problem,
    open_failure,
)
from ._mediatypes import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_MEDIA_TYPES,
    MEDIA_KINDS,
    OCI_ARTIFACT,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    ROLE_OF_FIELD,
    SUCCESSOR_FIELDS,
    is_manifest_type,
    media_kind,
)
from ._model import (
    BlobInfo,
    Descriptor,
    Index,
    IndexEntry,
    Layout,
    Manifest,
    ManifestSource,
    Reporter,
)
from ._operations import names_checksum, plan_key, plan_operation, plan_tags, push_times
from ._parse import (
    BytesManifestSource,
    layout_from_bytes,
    manifest_from_document,
    parse_descriptor,
    parse_index,
    parse_manifest,
    render_index,
    restore_index_entries,
)
from ._plan import (
    KEPT_KINDS,
    OPERATIONS,
    REASON_KINDS,
    Deletion,
    IndexChange,
    Kept,
    KeptKind,
    Operation,
    Plan,
    Reason,
    ReasonKind,
    format_bytes,
)
from ._planning import (
    Liveness,
    deletion_closure,
    describe_index_drift,
    liveness,
    plan_delete,
    plan_gc,
    plan_remove,
    plan_untag,
    simulate,
)
from ._policy import PRESETS, Policy
from ._refs import resolve_in, resolve_ref, resolve_refs
from ._registry import (
    GC_HINT,
    MANIFEST_ACCEPT,
    NO_REFERRERS_API,
    PROBE_ANSWERS,
    PROBE_DIGEST,
    REDIRECT_STATUSES,
    ApplyStep,
    ConnectionFailure,
    Credentials,
    DeleteStep,
    DeleteUnsupportedError,
    FallbackStep,
    ImageDating,
    PushTimeUnknownError,
    RegistryApplyError,
    RegistryApplying,
    RegistryApplyResult,
    RegistryAuthError,
    RegistryAuthorization,
    RegistryError,
    RegistryNotFoundError,
    RegistryRef,
    RegistryServerError,
    RegistrySnapshot,
    RegistryTLSError,
    RegistryUnreachableError,
    RequestTries,
    TagPages,
    TokenRequest,
    UntagStep,
    answer_challenge,
    auth_file_credentials,
    auth_files,
    bearer_token,
    check_plan_origin,
    connection_error,
    credentials_in,
    manifest_gone,
    parse_credentials,
    parse_reference,
    plan_on_repository,
    refuse_push_time,
    response_error,
    upload_url,
    verified_blob,
)
from ._retention import (
    EXPIRED_RULES,
    KEPT_RULES,
    PruneReporter,
    Retention,
    RetentionDecision,
    RetentionRules,
    plan_prune,
    retention_rules,
)
from ._revalidate import Revalidated, SkippedStep, revalidate
from ._rules import (
    LifecyclePolicyError,
    RefName,
    RetentionRuleError,
    age_key,
    config_created,
    image_time,
    manifest_created,
    parse_duration,
    parse_ref_name,
    parse_size,
    parse_time,
    repository_of,
)
from ._shell_errors import (
    ApplyError,
    ApplyInterrupted,
    LayoutAccessError,
    LayoutLockedError,
    LayoutMovedError,
    PlanMismatchError,
    PlanOriginError,
    RestoreRefusedError,
)
from ._view import GraphSource, NodeRecord, WholeGraph, neighbourhood
from .render import graph_html, graph_mimebundle, plan_html, to_dot, to_mermaid
from .space import LayoutSpace, SpaceReport, TagSpace, format_space_text, space_by_tag

__version__ = "0.1.0"

__all__ = [
    # values
    "Descriptor", "IndexEntry", "Index", "BlobInfo", "Manifest", "ManifestSource", "Layout",
    "Reporter", "Policy", "PRESETS", "Plan", "Deletion", "Reason", "IndexChange", "Kept",
    "REASON_KINDS", "KEPT_KINDS", "OPERATIONS", "ReasonKind", "KeptKind", "Operation",
    # digests and media types
    "SWEEPABLE_ALGORITHMS", "parse_digest", "is_sweepable", "digest_bytes", "short_digest",
    "blob_parts", "are_digest_names", "printable",
    "OCI_MANIFEST", "OCI_INDEX", "OCI_ARTIFACT", "DOCKER_MANIFEST", "DOCKER_LIST",
    "MANIFEST_MEDIA_TYPES", "SUCCESSOR_FIELDS", "ROLE_OF_FIELD", "REF_NAME", "is_manifest_type",
    "MEDIA_KINDS", "media_kind",
    # parsing
    "parse_descriptor", "parse_index", "parse_manifest", "manifest_from_document",
    "render_index", "restore_index_entries", "BytesManifestSource", "layout_from_bytes",
    # graph
    "LayoutGraph", "build_graph", "referrers_of", "successors_of", "tags_of", "roots", "live_set", "why_live",
    "resolve_ref", "resolve_refs", "is_young", "young_nodes",
    "NODE_ATTRIBUTES", "NODE_SCHEMA", "NodeAttribute", "encode_node_attrs", "decode_node_attrs",
    "encode_node_columns",
    # planning
    "Liveness", "liveness", "deletion_closure", "describe_index_drift", "plan_delete", "plan_gc", "plan_untag", "plan_remove", "simulate",
    "format_bytes",
    # neighbourhood views (a delete planned from the targets' surroundings)
    "GraphSource", "NodeRecord", "WholeGraph", "NeighbourhoodView", "neighbourhood", "resolve_in",
    # for adapters: an operation by name, push times, a plan's tags, keys of a store
    "plan_operation", "push_times", "plan_tags", "plan_key", "names_checksum",
    # for adapters: what a listing of blobs/ holds, oci-layout, failed opens and reads
    "Junk", "JUNK_KINDS", "blob_name", "algorithm_folder_junk", "blob_names", "entry_junk",
    "not_a_layout", "NO_LAYOUT_HERE", "oci_layout_problem", "open_failure", "is_disk_error", "FileStat", "ListedBlobs",
    "BlobManifestSource", "flock_holder",
    # pictures and space (ocigraph.draw.draw needs matplotlib)
    "to_mermaid", "to_dot", "plan_html", "graph_html", "graph_mimebundle",
    "space_by_tag", "SpaceReport", "TagSpace", "LayoutSpace", "format_space_text",
    # errors
    "OcigraphError", "LayoutError", "InvalidDigestError", "InvalidIndexError",
    "BrokenManifestError", "RequestError", "UnknownRefError", "AmbiguousRefError", "GuardError",
    "StalePlanError", "PlanFormatError",
    # the shell's errors (ocigraph._shell_errors): a locked, moved or unreadable layout, an apply
    "LayoutAccessError", "LayoutLockedError", "ApplyError", "PlanMismatchError",
    "LayoutMovedError", "PlanOriginError", "ApplyInterrupted", "RestoreRefusedError",
    # retention (ocigraph prune)
    "plan_prune", "RetentionRules", "retention_rules", "Retention", "RetentionDecision",
    "PruneReporter", "KEPT_RULES", "EXPIRED_RULES", "RetentionRuleError", "LifecyclePolicyError",
    "LifecyclePolicy", "LifecycleRule", "LifecycleImage", "LifecycleVerdict",
    "parse_lifecycle_policy", "evaluate_lifecycle", "RefName", "parse_ref_name", "repository_of",
    "parse_duration", "parse_size", "parse_time", "image_time", "manifest_created",
    "config_created", "age_key",
    # a plan met by a state it was not made from (a registry re-read before applying)
    "revalidate", "Revalidated", "SkippedStep",
    # the OCI Distribution API's formats (a registry adapter's pure part)
    "EMPTY_DESCRIPTOR", "RETRY_STATUSES", "fallback_tag", "fallback_subject", "parse_challenge", "error_code",
    "next_link", "retry_after", "index_descriptors", "manifest_successors", "repository_layout",
    "without_referrers", "throwaway_manifest", "FallbackIndex", "Repository", "RepositoryReader",
    "FailureKind", "describe_failure", "auth_config_credentials", "next_tags_page",
    "manifest_identity", "images_to_date", "RepositoryChanges", "repository_changes",
    # a registry client's decisions (its requests are io_adapters.registry's)
    "RegistryError", "RegistryUnreachableError", "RegistryTLSError", "RegistryAuthError",
    "RegistryNotFoundError", "DeleteUnsupportedError", "RegistryServerError", "RegistryApplyError",
    "PushTimeUnknownError", "RegistryRef", "parse_reference", "RegistrySnapshot", "Credentials",
    "parse_credentials", "auth_files", "auth_file_credentials", "credentials_in",
    "MANIFEST_ACCEPT", "REDIRECT_STATUSES", "NO_REFERRERS_API", "PROBE_DIGEST", "PROBE_ANSWERS",
    "GC_HINT", "ConnectionFailure", "connection_error", "response_error", "RequestTries",
    "TokenRequest", "answer_challenge", "bearer_token", "RegistryAuthorization", "upload_url",
    "manifest_gone", "verified_blob", "TagPages", "plan_on_repository", "refuse_push_time",
    "ImageDating", "check_plan_origin", "UntagStep", "FallbackStep", "DeleteStep", "ApplyStep",
    "RegistryApplyResult", "RegistryApplying",
]
