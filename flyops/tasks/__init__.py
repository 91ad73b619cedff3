"""Invoke task collections. Tasks only parse options, call the core and present results."""
