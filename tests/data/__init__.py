"""Tests of backend.data (a package, so helper modules import relatively)."""
