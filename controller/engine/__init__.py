"""The pure decision core: cluster state, quota, DRA allocation, placement, admission.

Nothing here does I/O or imports asyncio or a Kubernetes client, so the controller
and the simulator drive exactly the same logic.
"""
