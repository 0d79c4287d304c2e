"""Small shared helpers (entry-point plumbing, hashing, logging)."""
