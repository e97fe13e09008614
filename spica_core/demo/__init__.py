"""The embedded demo cluster (``spica demo``): SSH nodes on 127.0.0.1 for the README demo,
the console and the tests. See :mod:`spica_core.demo.cluster`.

The package imports nothing itself: each node server (:mod:`spica_core.demo.server`, run as
``-m``, one process per node) pays only for what it uses, not for the cluster's dbspica
seeding. Import :class:`~spica_core.demo.cluster.DemoCluster` from its module.
"""
