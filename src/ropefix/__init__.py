"""ropefix: find, fix, prove and ship the mRoPE ``rope_deltas`` multi-device bug in transformers."""

UNKNOWN_VERSION = "0+unknown"  # a source tree on sys.path that was never installed has no metadata


def __getattr__(name: str):  # lazy, so `import ropefix` stays cheap (no torch, no importlib.metadata)
    if name in ("hotfix", "hotfix_class"):
        import importlib

        module = importlib.import_module("ropefix.hotfix")  # callable: ropefix.hotfix(model) works
        return module if name == "hotfix" else module.hotfix_class
    if name == "__version__":
        # The installed metadata is the one truth: setuptools-scm writes it from the git tag at build time.
        from importlib import metadata

        try:
            version = metadata.version("ropefix")
        except metadata.PackageNotFoundError:
            version = UNKNOWN_VERSION
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module 'ropefix' has no attribute {name!r}")
