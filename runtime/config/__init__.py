"""Project configuration: ``runyard.toml``, supervision settings and the merged service environment."""
