"""The console's screens: the dashboard, the stack detail and the key map."""
