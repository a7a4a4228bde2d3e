"""`iaa demo`: the whole method on a small synthetic-label dataset built from real photographs."""
