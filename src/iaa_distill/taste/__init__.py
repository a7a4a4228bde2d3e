"""A personal aesthetics model from a photographer's own ratings (`iaa taste`)."""
