"""Where untrusted model actions run: sandboxes (local namespaces, Docker) and SQL servers."""
