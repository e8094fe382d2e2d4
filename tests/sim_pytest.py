"""Run pytest with two simulated accelerators (``python sim_pytest.py ARGS``), so upstream's
``@require_torch_multi_accelerator`` tests run on a CPU-only machine."""

import sys

from ropefix import devices

with devices.simulate(n=2):
    import pytest

    rc = pytest.main(["-q", "-p", "no:cacheprovider", "-W", "ignore", *sys.argv[1:]])
sys.exit(int(rc))
