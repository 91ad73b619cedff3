"""The flyctl seam: argv builders (commands), the one runner, and flyctl's secrets import format."""
