"""Client side of reward3d: an SDK to call the service, and a Flow-GRPO trainer built on it.

Nothing here imports ``service``: trainers talk to reward3d over HTTP only.
"""
