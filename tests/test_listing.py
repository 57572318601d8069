"""The core's judgement of what an adapter found in a layout (``ocigraph._listing``): which
entries under ``blobs/`` are blobs and why the others are junk, ``oci-layout``, failed opens,
failed reads, and the two values an adapter fills in (``ListedBlobs``, ``BlobManifestSource``)."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from types import SimpleNamespace

import pytest

import ocigraph as og

A, B = "a" * 64, "b" * 64


def test_a_listing_keeps_digest_names_in_order_and_sets_aside_every_other_name() -> None:
    names = [B, "x.tmp", A, "A" * 64, "ab" * 31 + "g0", "\udcff" * 64]
    digests, junk = og.blob_names("sha256", names)
    assert digests == [f"sha256:{B}", f"sha256:{A}"]
    assert [j.why for j in junk] == ["not a valid digest name"] * 4
    assert junk[0].path == "blobs/sha256/x.tmp"
    assert junk[-1].path == "blobs/sha256/" + "\\xff" * 64  # printable, whatever the bytes


@pytest.mark.parametrize("alg", sorted(og.SWEEPABLE_ALGORITHMS))
def test_a_clean_listing_is_all_blobs_for_every_algorithm(alg: str) -> None:
    names = ["0" * og.SWEEPABLE_ALGORITHMS[alg], "f" * og.SWEEPABLE_ALGORITHMS[alg]]
    assert og.blob_names(alg, names) == ([f"{alg}:{n}" for n in names], [])
    assert og.blob_names(alg, ["0" * 64] if alg != "sha256" else [])[0] == []


def test_an_entry_that_is_not_a_file_is_judged_by_its_name_first_then_its_kind() -> None:
    assert og.entry_junk("sha256", A, "symlink") == og.Junk(
        f"blobs/sha256/{A}", "symlink (never followed, never deleted)")
    assert og.entry_junk("sha256", A, "other").why == "not a regular file"
    assert og.entry_junk("sha256", A, "cannot stat (Permission denied)").why == \
        "cannot stat (Permission denied)"
    assert og.entry_junk("sha256", "lost+found", "other").why == "not a valid digest name"
    assert set(og.JUNK_KINDS) == {"symlink", "other"}


def test_only_the_folders_of_sweepable_algorithms_are_listed() -> None:
    assert all(og.algorithm_folder_junk(alg, True) is None for alg in og.SWEEPABLE_ALGORITHMS)
    assert og.algorithm_folder_junk("blake3", True) == og.Junk("blobs/blake3", "unknown algorithm folder")
    assert og.algorithm_folder_junk(".DS_Store", False) == og.Junk("blobs/.DS_Store", "not an algorithm folder")


@pytest.mark.parametrize(("data", "problem"), [
    (b'{"imageLayoutVersion": "1.0.0"}', None),
    (b'{"imageLayoutVersion": "1"}', None),
    (b'{"imageLayoutVersion": "1.1.0", "extra": true}', None),
    (b'{"imageLayoutVersion": "10.0"}', "imageLayoutVersion is '10.0', expected 1.x"),
    (b'{"imageLayoutVersion": 1}', "imageLayoutVersion is 1, expected 1.x"),
    (b'{}', "imageLayoutVersion is None, expected 1.x"),
    (b'["imageLayoutVersion"]', "imageLayoutVersion is None, expected 1.x"),
    (b"", "not valid JSON"),
])
def test_oci_layout_must_be_a_json_object_of_version_1(data: bytes, problem: str | None) -> None:
    assert og.oci_layout_problem(data) == problem


def test_a_missing_oci_layout_beside_an_index_json_says_so() -> None:
    assert og.not_a_layout(False) == "not an OCI image layout (no oci-layout file)"
    assert og.not_a_layout(True) == \
        "not an OCI image layout (it has an index.json but no oci-layout file)"


@pytest.mark.parametrize(("code", "link", "why"), [
    (errno.ENOENT, False, "missing"),
    (errno.ENOENT, True, "missing"),
    (errno.ELOOP, False, "is a symlink; ocigraph does not follow symlinks"),
    (errno.ENOTDIR, True, "is a symlink; ocigraph does not follow symlinks"),
    (errno.ENOTDIR, False, "is not a directory"),
    (errno.EACCES, False, "cannot open (Permission denied)"),
])
def test_a_failed_open_says_why_in_one_phrase(code: int, link: bool, why: str) -> None:
    assert og.open_failure(code, "Permission denied", link) == why


def test_a_missing_layout_folder_says_what_was_expected_there_not_just_missing() -> None:
    why = og.open_failure(errno.ENOENT, "No such file or directory", root=True)
    assert why == og.NO_LAYOUT_HERE and "oci-layout, index.json and blobs/" in why
    # anything else at the root reads as at any other folder
    assert og.open_failure(errno.ENOTDIR, "Not a directory", root=True) == "is not a directory"
    assert og.open_failure(errno.ELOOP, "x", True, root=True).startswith("is a symlink")


_LOCKS = """\
1: POSIX  ADVISORY  WRITE 501 fd:01:5678 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
2: -> FLOCK  ADVISORY  WRITE 999 fd:01:5678 0 EOF
3: FLOCK  ADVISORY  READ 42 08:11:5678 0 EOF
4: FLOCK  ADVISORY  WRITE 7 fd:01:56789 0 EOF
"""


def test_the_lock_holder_is_the_pid_of_the_flock_on_that_very_file() -> None:
    assert og.flock_holder(_LOCKS, 0xFD, 1, 5678) == 1234  # not the POSIX lock, not the waiter
    assert og.flock_holder(_LOCKS, 8, 0x11, 5678) == 42  # another device, same inode
    assert og.flock_holder(_LOCKS, 0xFD, 1, 56789) == 7
    assert og.flock_holder(_LOCKS, 0xFD, 2, 5678) is None
    assert og.flock_holder(_LOCKS, 0xFD, 1, 567) is None  # an inode is never matched by prefix
    assert og.flock_holder("", 0xFD, 1, 5678) is None


def test_a_lock_line_without_a_pid_names_no_holder() -> None:
    assert og.flock_holder("1: FLOCK  ADVISORY  WRITE -1 fd:01:5678 0 EOF", 0xFD, 1, 5678) is None
    assert og.flock_holder("1: FLOCK", 0xFD, 1, 5678) is None


def test_only_reads_that_say_something_about_the_disk_are_disk_errors() -> None:
    d = og.digest_bytes(b"not json")
    assert not og.is_disk_error(og.parse_manifest(d, b"not json"))  # a fact about the digest
    assert not og.is_disk_error(og.parse_manifest(d, None))  # missing: the folder's stamps say it
    assert not og.is_disk_error(og.parse_manifest(og.digest_bytes(b"[]"), b"[]"))  # not an object
    assert og.is_disk_error(og.parse_manifest(og.digest_bytes(b"other"), b"not json"))
    assert og.is_disk_error(og.Manifest(d, error="not a regular file"))
    assert og.is_disk_error(og.Manifest(d, error="cannot read (Input/output error)"))


class _Counted(og.ListedBlobs):
    __slots__ = ("looked",)

    def __init__(self, digests: Sequence[str]) -> None:
        super().__init__(digests)
        self.looked: list[str] = []

    def look(self, digest: str) -> og.BlobInfo:
        self.looked.append(digest)
        return og.BlobInfo(7, 1.5)


def test_listed_blobs_look_a_blob_up_once_and_only_when_asked() -> None:
    blobs = _Counted(["sha256:a", "sha256:b"])
    assert list(blobs) == ["sha256:a", "sha256:b"] and "sha256:b" in blobs and "sha256:c" not in blobs
    assert blobs.looked == [] and blobs.examined() == set()
    assert blobs["sha256:a"] == blobs["sha256:a"] == og.BlobInfo(7, 1.5)
    assert blobs.get("sha256:c") is None and blobs.looked == ["sha256:a"]
    with pytest.raises(KeyError):
        blobs["sha256:c"]
    assert blobs.note("sha256:b", SimpleNamespace(st_size=3, st_mtime=2.0)) == og.BlobInfo(3, 2.0)
    assert blobs["sha256:b"] == og.BlobInfo(3, 2.0) and blobs.looked == ["sha256:a"]
    assert blobs.note("sha256:c", SimpleNamespace(st_size=1, st_mtime=None)) == og.BlobInfo(1, None)
    assert "sha256:c" not in blobs and blobs.examined() == {"sha256:a", "sha256:b"}


class _Reads(og.BlobManifestSource):
    def __init__(self, blobs: dict[str, bytes | og.Manifest]) -> None:
        self.blobs = blobs

    def read_blobs(self, digests: Sequence[str]) -> list[bytes | og.Manifest]:
        return [self.blobs[d] for d in digests]


def test_a_blob_manifest_source_parses_what_it_reads_and_counts_failures_of_the_disk() -> None:
    good, bad, gone = (og.digest_bytes(x) for x in (b"{}", b"bad", b"gone"))
    source = _Reads({good: b"{}", bad: og.Manifest(bad, error="cannot read (EIO)"),
                     gone: og.parse_manifest(gone, None)})
    got = source.read_manifests([good, bad, gone])
    assert list(got) == [good, bad, gone] and got[good].ok and got[gone].missing
    assert source.disk_errors == 1
    source.read_manifests([bad])
    assert source.disk_errors == 2
    assert source.read_blob(good) == b"{}" and source.read_blob(bad) is None
