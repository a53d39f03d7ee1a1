"""Tests that start real service processes."""

import pytest

# Before anything imports it: the asserts of the shared helpers get pytest's detailed messages too.
pytest.register_assert_rewrite("tests.integration.zerovisor")
