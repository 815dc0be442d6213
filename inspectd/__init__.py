"""inspectd: industrial edge inspection daemon."""
