"""Fixtures shared by every test folder live in tests/fixtures/ and load from here."""

pytest_plugins = ["tests.fixtures.prometheus", "tests.fixtures.browser"]
