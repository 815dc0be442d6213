"""Image sources: synthetic parts, replayed folders, GenICam cameras."""
