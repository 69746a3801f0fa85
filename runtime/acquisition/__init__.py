"""Acquisition of service binaries: catalogs, fetching into the cache, safe extraction, the
archive safety rules, ``ensure_service`` and the drift check of what was installed."""
