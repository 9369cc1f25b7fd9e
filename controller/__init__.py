"""Phalanx: an all-or-nothing gang-scheduling batch controller for Kubernetes."""
