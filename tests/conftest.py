"""Test-suite settings. On CI (environment variable CI set, as `.ci/run` does) hypothesis draws the same
examples on every run (`derandomize`), so a red CI always points at a reproducible input; local runs keep
drawing new examples."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
