"""Kubernetes I/O: list+watch caches, commit protocol, lifecycle (controller issues)."""
