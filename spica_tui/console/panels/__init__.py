"""The dashboard's panels, one module each (Dolphie's ``Panels/``).

A panel builds its widgets and knows how to render a snapshot it is handed: it never opens
an SSH connection or a database session, and never decides anything a script would want.
"""
