"""Hypothesis profiles for the property tests (tests/test_properties.py).

Pick one with the ``HYPOTHESIS_PROFILE`` environment variable:

``default``   300 examples per property, no deadline (what ``pytest`` runs)
``ci``        the same examples, without the example database (a fresh runner has none), and
              printing the reproduction blob of a failure
``dev``       50 examples, for a quick loop while editing
``thorough``  3000 examples, to hunt for rare bugs before a release
"""

from __future__ import annotations

import atexit as _atexit
import os
import shutil as _shutil
import tempfile as _tempfile

from hypothesis import HealthCheck, settings

# Every test -- and every process a test starts, which inherits the environment -- keeps
# ocigraph's cache in a temporary folder of this session, never in the user's ~/.cache.
# Set here, at import, so that it holds before any test module imports ocigraph's shell.
# Hypothesis's folder goes there too (not ./.hypothesis, nor notebooks/.hypothesis for the
# notebooks' kernels): a run writes nothing outside temporary folders, and a failure prints
# its reproduction blob instead of leaving it in an example database.
_CACHE_ROOT = _tempfile.mkdtemp(prefix="ocigraph-test-cache-")
os.environ["OCIGRAPH_CACHE_DIR"] = _CACHE_ROOT
os.environ["XDG_CACHE_HOME"] = _CACHE_ROOT
os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = os.path.join(_CACHE_ROOT, "hypothesis")
_atexit.register(_shutil.rmtree, _CACHE_ROOT, True)

_BASE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)

settings.register_profile("default", _BASE, max_examples=300)
settings.register_profile("ci", _BASE, max_examples=300, database=None)
settings.register_profile("dev", _BASE, max_examples=50)
settings.register_profile("thorough", _BASE, max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
