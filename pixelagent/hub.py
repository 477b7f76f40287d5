"""Hugging Face Hub ids as model names: ``Agent("org/name")`` reads the normal Hub cache.

A Hub id resolves through ``huggingface_hub.snapshot_download`` (the cache every HF library
shares, ``HF_HOME`` / ``HF_HUB_CACHE`` respected); with ``HF_HUB_OFFLINE=1`` only what is already
cached is used, and a missing model is one line naming the command that fetches it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pixelagent.errors import MissingDependencyError, WeightsNotFoundError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` that is not a path on this machine."""
    return bool(_HUB_ID.match(name)) and not Path(name).exists() and not name.endswith((".yaml", ".yml", ".json"))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of ``repo_id`` (downloaded unless offline); WeightsNotFoundError if absent."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise MissingDependencyError(f"{repo_id!r} looks like a Hugging Face Hub id, which needs huggingface_hub: "
                                     "pip install huggingface_hub") from None
    fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=offline(),
                                      library_name="pixelagent"))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE=1 is set" if offline() else "the Hub could not be reached"
        raise WeightsNotFoundError(f"{repo_id} is not in the Hugging Face cache and {why}; fetch it with "
                                   f"`{fetch}` (or pass a local directory)") from None
    except RepositoryNotFoundError:
        raise WeightsNotFoundError(f"no Hugging Face repository {repo_id!r} (or it is private: log in with "
                                   "`hf auth login`); check the id") from None
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsNotFoundError(f"cannot fetch {repo_id} from the Hugging Face Hub ({type(exc).__name__}); "
                                   f"fetch it with `{fetch}` and pass the directory") from None
