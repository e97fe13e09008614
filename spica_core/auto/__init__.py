"""``spica auto``: a stacking release's rules and tile grid turned into stack units.

:mod:`.tiles` lays out a grid and finds the tiles an exposure touches; :mod:`.rules` says
which images a release takes; :mod:`.plan` makes the units (no writes); :mod:`.freeze`
keeps a release's settings fixed once it has stacks; :mod:`.apply` copies the inputs and
adds the units.
"""
