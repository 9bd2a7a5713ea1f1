"""Fixtures shared by every test module."""

from .dbbackends import backend, server_backend  # noqa: F401 - pytest fixtures
