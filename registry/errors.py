"""Errors raised by the model store, names and manifests.

Every class derives from :class:`StoreError`, so the API layer can catch one type and map it to a status:
``ModelNotFound`` and ``BlobNotFound`` → 404, ``InsufficientStorage`` → 507, everything else → 400.
Messages never contain filesystem paths (they may reach HTTP clients), only names and digests.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class for every error raised by ``registry`` store code."""


class InvalidName(StoreError, ValueError):
    """A model name that does not follow the grammar of ``registry.names``."""


class InvalidDigest(StoreError, ValueError):
    """A digest that is not exactly ``sha256:`` followed by 64 lowercase hex digits."""


class InvalidManifest(StoreError, ValueError):
    """Manifest bytes that are not a well-formed, single-image manifest."""


class DigestMismatch(StoreError, ValueError):
    """Content whose sha256 differs from the digest it was announced with. Nothing was stored."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f'digest mismatch, expected "{expected}", got "{got}"')
        self.expected = expected
        self.got = got


class BlobTooLarge(StoreError, ValueError):
    """Content over the size cap the caller asked for. Nothing was stored."""


class ModelNotFound(StoreError, LookupError):
    """No manifest exists for the name (compared case-insensitively)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found")
        self.name = name


class BlobNotFound(StoreError, LookupError):
    """A referenced blob is not in the store."""

    def __init__(self, digest: str) -> None:
        super().__init__(f'blob "{digest}" not found')
        self.digest = digest


class InsufficientStorage(StoreError):
    """The disk filled up while writing; the partial write was removed."""
