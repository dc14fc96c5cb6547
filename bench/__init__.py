"""Comparative IMAP benchmarks: gximap side by side with Dovecot and pymap (``python -m bench``).

Modules: :mod:`bench.messages` (test mail), :mod:`bench.client` (raw pipelined IMAP/LMTP clients),
:mod:`bench.loadgen` (load generator processes), :mod:`bench.servers` (install, configure, start and
stop the servers), :mod:`bench.workloads` (what is measured), :mod:`bench.report` (table and JSON),
:mod:`bench.profiling` (py-spy profiles of gximap). ``bench/store.py`` is a separate script that
measures the midb store on its own.
"""
