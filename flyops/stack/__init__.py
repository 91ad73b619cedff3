"""The stack: its model (fly/stack.toml and overlays), its env files, and what each app wants."""
