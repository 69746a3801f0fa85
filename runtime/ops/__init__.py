"""Operations: the hash-chained audit trail, licenses and the startup checks (doctor)."""
