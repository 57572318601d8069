"""Media types, and which descriptor fields are successors for each (SEMANTICS §1).

The table is data, not an if-chain: the docs print it, the parser walks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = [
    "OCI_MANIFEST",
    "OCI_INDEX",
    "OCI_ARTIFACT",
    "DOCKER_MANIFEST",
    "DOCKER_LIST",
    "SUCCESSOR_FIELDS",
    "MANIFEST_MEDIA_TYPES",
    "ROLE_OF_FIELD",
    "REF_NAME",
    "is_manifest_type",
    "MEDIA_KINDS",
    "media_kind",
]

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_ARTIFACT: Final = "application/vnd.oci.artifact.manifest.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"

#: The annotation that makes an index.json entry *tagged*.
REF_NAME: Final = "org.opencontainers.image.ref.name"

#: media type of the referencing descriptor -> the fields of the manifest that are successors,
#: in the order they are walked.  Any other media type is a leaf.
SUCCESSOR_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    OCI_MANIFEST: ("subject", "config", "layers"),
    OCI_INDEX: ("subject", "manifests"),
    OCI_ARTIFACT: ("subject", "blobs"),
    DOCKER_MANIFEST: ("config", "layers"),
    DOCKER_LIST: ("manifests",),
}

#: field -> the edge role it gives.  ``subject`` edges run referrer -> subject.
ROLE_OF_FIELD: Final[dict[str, str]] = {
    "subject": "subject",
    "config": "config",
    "layers": "layer",
    "manifests": "manifest",
    "blobs": "blob",
}

MANIFEST_MEDIA_TYPES: Final = frozenset(SUCCESSOR_FIELDS)


def is_manifest_type(media_type: str | None) -> bool:
    """True for the five media types whose content has successors.

    >>> is_manifest_type(OCI_INDEX), is_manifest_type("application/vnd.oci.image.layer.v1.tar")
    (True, False)
    """
    return media_type in MANIFEST_MEDIA_TYPES


#: media type -> the word people read for it (``show``, plan texts).  A media type not listed
#: is a ``layer`` when it names a layer or a tar archive, else a ``blob`` (see :func:`media_kind`).
MEDIA_KINDS: Final[dict[str, str]] = {
    OCI_MANIFEST: "manifest",
    OCI_INDEX: "index",
    OCI_ARTIFACT: "artifact",
    DOCKER_MANIFEST: "docker-manifest",
    DOCKER_LIST: "docker-list",
    "application/vnd.oci.image.config.v1+json": "config",
    "application/vnd.docker.container.image.v1+json": "config",
    "application/vnd.oci.empty.v1+json": "empty",
}


def media_kind(media_types: Iterable[str]) -> str:
    """What a node is, in one word, from the media types its descriptors gave it: the
    :data:`MEDIA_KINDS` word of each, several joined with ``/`` in sorted order; ``blob`` when
    there are none.

    >>> media_kind([OCI_INDEX]), media_kind(["application/vnd.oci.image.layer.v1.tar+gzip"])
    ('index', 'layer')
    >>> media_kind([DOCKER_MANIFEST, "application/octet-stream"]), media_kind([])
    ('blob/docker-manifest', 'blob')
    """
    if isinstance(media_types, str):
        media_types = (media_types,)
    kinds = sorted({MEDIA_KINDS.get(m) or ("layer" if ".layer." in m or "tar" in m else "blob")
                    for m in media_types})
    return "/".join(kinds) if kinds else "blob"
