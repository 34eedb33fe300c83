"""Model families defined outside the package, as a user or plugin would: see rae.py."""
