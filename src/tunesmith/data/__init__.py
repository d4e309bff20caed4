"""Data stage: read → validate → dedup → rules → split. Everything after the reader sees canonical records."""
