"""Discrete-event simulator that drives the real engine and policies on virtual time."""
