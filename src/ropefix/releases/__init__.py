"""Where releases come from: release specs, the package index, safe archives, git work trees of any release, and an interpreter per release."""
