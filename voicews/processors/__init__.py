"""The builtin processors; each module is a plugin registered like a user's."""
