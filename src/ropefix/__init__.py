"""ropefix: find, fix, prove and ship the mRoPE ``rope_deltas`` multi-device bug in transformers."""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy, so `import ropefix` stays cheap (no torch)
    if name in ("hotfix", "hotfix_class"):
        import importlib

        module = importlib.import_module("ropefix.hotfix")  # callable: ropefix.hotfix(model) works
        return module if name == "hotfix" else module.hotfix_class
    raise AttributeError(f"module 'ropefix' has no attribute {name!r}")
