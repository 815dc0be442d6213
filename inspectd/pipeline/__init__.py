"""Stage threads joined by bounded queues, per-part deadlines, exactly one verdict per part."""
