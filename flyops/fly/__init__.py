"""The Fly side: the flyctl seam and everything built on it."""
