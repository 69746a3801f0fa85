"""The tree core: layout and root resolution, the manifest, versions, the error tree, atomic
writes, locks, canonical JSON, capped reads, free space, disk usage, byte formatting."""
