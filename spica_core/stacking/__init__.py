"""Co-adds on a node: a stack unit's inputs and outputs, its ``commands.sh`` lines and the
reading of what the tools wrote (DESIGN §11).

:mod:`.unit` is the contract between ``spica auto`` (which decides a unit's inputs, tile and
node) and the lines that build it; :mod:`.outputs` names every file of a unit's work
directory, so the generated commands and the reader of the results never disagree.
"""
