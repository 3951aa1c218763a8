"""Fixtures for tests that run as an unprivileged user (see tests/rootlesstools.py)."""

from __future__ import annotations

from rootlesstools import rootless_install, user, user_without_subids

__all__ = ["rootless_install", "user", "user_without_subids"]
