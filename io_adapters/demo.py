"""The demo layout the notebooks explore (:func:`ocigraph.demo.demo_content`), written to disk;
the core's names are re-exported, so ``from io_adapters.demo import demo_content`` works.

>>> demo = demo_content(scale=0.01)
>>> demo.tags
('app-1.0', 'app-1.1', 'latest', 'legacy-0.9', 'worker-2.3')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ocigraph.demo import DEMO_IMAGES, LAYER_KIB, demo_content

__all__ = ["DEMO_IMAGES", "LAYER_KIB", "demo_content", "write_demo_layout"]


def write_demo_layout(path: Path | str, *, seed: int = 0, images: Sequence[str] = DEMO_IMAGES,
                      referrers: bool = True, garbage: bool = True, scale: float = 1.0) -> Path:
    """Write :func:`demo_content` as an OCI image layout at ``path`` and return ``path``.

    ``path`` must not exist or be an empty directory: this never writes over a layout.
    The options are those of :func:`demo_content`.
    """
    root = Path(path)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory")
    demo = demo_content(seed=seed, images=images, referrers=referrers, garbage=garbage, scale=scale)
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for digest, data in demo.blobs.items():
        (blobs / digest.split(":", 1)[1]).write_bytes(data)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_bytes(demo.index_json)
    return root
