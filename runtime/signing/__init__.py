"""Keys and signatures: Ed25519 signing keys, CurveZMQ keys and the one Ed25519 helper."""
