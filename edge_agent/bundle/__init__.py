"""Model bundles: load and verify (a folder or a .tar.gz), the manifest schema, signatures and
safe archive extraction. The names below are the package's public face (the archive modules
are imported only when an archive is loaded)."""

from edge_agent.bundle.load import (
    MANIFEST,
    Bundle,
    BundleError,
    load_bundle,
    parse_manifest,
    sha256_file,
    verify_files,
    write_manifest,
)

__all__ = [
    "MANIFEST",
    "Bundle",
    "BundleError",
    "load_bundle",
    "parse_manifest",
    "sha256_file",
    "verify_files",
    "write_manifest",
]
