"""Shipping a proven fix: the upstream PR series and body, per-release patches, backports to installed releases."""
