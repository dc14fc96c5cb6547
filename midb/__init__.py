"""midb: the LMDB message index and store used by gximap (never imports gximap)."""
