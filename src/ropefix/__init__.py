"""ropefix: find, fix, prove and ship the mRoPE ``rope_deltas`` multi-device bug in transformers."""

__version__ = "0.1.0"
