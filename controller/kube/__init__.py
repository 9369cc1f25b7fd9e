"""Kubernetes I/O (list+watch caches, commit protocol, lifecycle); filled in by the controller issues."""
