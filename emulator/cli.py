"""`phalanx emulator`: run the API emulator until interrupted, printing the kubeconfig path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from emulator.server import Emulator


async def serve(
    *,
    port: int,
    tls: bool,
    manifests: list[Path],
    announce: Callable[[str], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Start, load the manifests, announce the kubeconfig, then serve until `stop` is set."""
    emulator = Emulator(port=port, tls=tls, controllers=True)
    async with emulator:
        for manifest in manifests:
            for name in await emulator.load(manifest):
                announce(f"loaded {name} from {manifest}")
        announce(str(emulator.kubeconfig_path))
        await (stop or asyncio.Event()).wait()


def manifests_in(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        found.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return found
