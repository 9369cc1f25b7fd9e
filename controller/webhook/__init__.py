"""Validating and defaulting admission webhook; filled in by the webhook issue."""
