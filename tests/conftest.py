import os
from pathlib import Path

# Tests read the offline benchmark copies beside the checkout unless told otherwise.
_shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("COCOS_DATA_DIR", str(_shared))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
