"""Fail-fast access to the Hugging Face hub for the real-model adapters.

Pretrained weights come from the local HF cache or, when online, the hub. On an offline machine
``huggingface_hub`` would retry a download for ~20 s before failing with a long traceback; here
we decide up front: with ``HF_HUB_OFFLINE=1`` (read at call time, not only at import) or when the
hub endpoint cannot be reached within a few seconds, the loading code runs in hub offline mode,
so a missing file fails at once and the adapter turns it into a one-line
:class:`~robustmm.errors.MissingWeightsError`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

_TRUE = {"1", "on", "yes", "true"}


def offline_requested() -> bool:
    """``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set now (or when huggingface_hub was imported)."""
    if any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers/open_clip
        return True
    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """Where hub files are looked for: ``cache_dir`` or the HF hub cache (``HF_HUB_CACHE``)."""
    if cache_dir is not None:
        return str(cache_dir)
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub endpoint (or the HTTPS proxy), no retries."""
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:  # pragma: no cover
        return False
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy if proxy else endpoint)
    host = url.hostname
    port = url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class HubMode:
    """Whether hub look-ups may download; if not, why (for error messages)."""

    online: bool
    reason: str = ""


@contextlib.contextmanager
def hub_access(allow_download: bool = True) -> Iterator[HubMode]:
    """Context in which hub look-ups either may download or are local-only.

    Local-only mode patches ``huggingface_hub.constants.HF_HUB_OFFLINE`` for the duration of the
    block (transformers and open_clip both consult it), so nothing retries over the network.
    """
    if not allow_download:
        mode = HubMode(False, "downloads disabled")
    elif offline_requested():
        mode = HubMode(False, "HF_HUB_OFFLINE is set")
    elif not hub_reachable():
        mode = HubMode(False, "the hub is unreachable")
    else:
        mode = HubMode(True)
    if mode.online:
        yield mode
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        yield mode
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield mode
    finally:
        constants.HF_HUB_OFFLINE = saved


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception message, shortened (for one-line errors)."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
