"""casegate's rules: pure decisions (stdlib only, no I/O)."""
