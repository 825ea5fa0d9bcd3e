"""Code that turns outside happenings into events (the upload producer used by the API)."""
