"""Ordering, preemption and placement policies implementing the engine's policy Protocols."""
