"""Applications: the binaries a release runs, as each node really has them.

:mod:`.versions` finds what a binary here is (standard library only: the node agent uses it);
:mod:`.table` reads the ``application`` table and owns the comparison of a binary with it;
:mod:`.store` records what units ran with and what nodes have; :mod:`.survey` asks every
node at once (``spica apps``); :mod:`.register` records a new install (``spica apps register``).
"""
