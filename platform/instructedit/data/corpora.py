"""Where the corpora are, and how to get them.

The data directory comes from --data-dir, data.data_dir, $INSTRUCTEDIT_DATA or ../shared/data; a
missing one raises `CorpusNotFoundError`, whose message says how to download KnowEdit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from ..config import RunConfig

KNOWEDIT_REPO = "zjunlp/KnowEdit"
# KnowEdit hub layout -> the layout the task YAMLs read (knowedit/<file>).
KNOWEDIT_FILES = {
    "benchmark/wiki_counterfact/train_cf.json": "knowedit/train_cf.json",
    "benchmark/wiki_counterfact/test_cf.json": "knowedit/test_cf.json",
    "benchmark/wiki_recent/recent_train.json": "knowedit/recent_train.json",
    "benchmark/wiki_recent/recent_test.json": "knowedit/recent_test.json",
    "benchmark/Convsent/blender_train.json": "knowedit/blender_train.json",
    "benchmark/Convsent/blender_val.json": "knowedit/blender_val.json",
    "benchmark/Convsent/blender_test.json": "knowedit/blender_test.json",
    "benchmark/ZsRE/ZsRE-test-all.json": "knowedit/ZsRE-test-all.json",
}


class CorpusNotFoundError(FileNotFoundError):
    """No data directory with the corpora; the message says how to get them."""


# ------------------------------------------------------------------------------------ data dir
def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]  # platform/instructedit/data/corpora.py


def resolve_data_dir(data_dir: str | os.PathLike | None = None, cfg: RunConfig | None = None) -> Path:
    """--data-dir, else cfg.data.data_dir, else $INSTRUCTEDIT_DATA, else ../shared/data (from the
    working directory, then from the repository)."""
    explicit = data_dir or (cfg.data.data_dir if cfg is not None else "") or os.environ.get("INSTRUCTEDIT_DATA")
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_dir():
            raise CorpusNotFoundError(f"data directory {p} does not exist.\n{HOW_TO_GET_DATA}")
        return p
    tried = [Path.cwd().parent / "shared" / "data", _repo_root().parent / "shared" / "data"]
    for p in tried:
        if p.is_dir():
            return p
    raise CorpusNotFoundError(
        f"no corpora found (tried --data-dir, data.data_dir, $INSTRUCTEDIT_DATA, {', '.join(map(str, tried))}).\n"
        + HOW_TO_GET_DATA
    )


HOW_TO_GET_DATA = (
    "Get the KnowEdit benchmark (MIT) with network access:\n"
    "  python -c \"from instructedit.data.corpora import download_knowedit; download_knowedit('data')\"\n"
    "(or `huggingface-cli download zjunlp/KnowEdit --repo-type dataset` and copy the benchmark/*/ files "
    "into data/knowedit/), then pass --data-dir data or set INSTRUCTEDIT_DATA=data. The MEND-format "
    "CounterFact/ZsRE files (tasks counterfact-mend, zsre) come from the MEND and ROME releases; put "
    "them under data/mend-format/."
)


def download_knowedit(dest: str | os.PathLike, revision: str | None = None) -> Path:
    """Download KnowEdit from the Hugging Face hub into `dest/knowedit/` (needs network)."""
    from huggingface_hub import hf_hub_download

    dest = Path(dest)
    (dest / "knowedit").mkdir(parents=True, exist_ok=True)
    for remote, local in KNOWEDIT_FILES.items():
        try:
            got = hf_hub_download(KNOWEDIT_REPO, remote, repo_type="dataset", revision=revision)
        except OSError as e:  # hub HTTP errors are OSErrors; a missing file should not stop the others
            print(f"download_knowedit: skipped {remote}: {e}", file=sys.stderr)
            continue
        shutil.copyfile(got, dest / local)
    return dest


def sha256_file(path: Path) -> str:
    """The digest the manifest records per source file (which corpus version was prepared)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

