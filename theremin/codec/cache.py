"""The one way a tokenizer is trained once and reused: a folder per corpus + settings under a cache root.

The folder's name comes from the tokenizer class (``cache_name``: a hash of the corpus bytes and every setting
that changes the model), so the same corpus and settings find the same folder. Training happens in a temp
folder beside it, renamed into place when whole (a killed run never leaves a half-written tokenizer that looks
done); a file lock lets parallel jobs (a sweep) share it: one trains, the others wait and load.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from theremin.fsio import current_umask

META_FILE = "tokenizer.json"  # every kind writes it; its "kind" says which (none: midichar)


def get_or_train(cls, text_file: str | os.PathLike, vocab_size: int, cache_root: str | os.PathLike, codec,
                 **options):
    """``cls``'s tokenizer for this corpus and settings: loaded from ``cache_root`` if there, else trained
    there. ``tok.from_cache`` says which."""
    final = Path(cache_root) / cls.cache_name(text_file, vocab_size, codec, **options)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / META_FILE).exists():
            tok = cls.load(final, codec)
            tok.from_cache = True
            return tok
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: read like any other folder once renamed
        print(f"training tokenizer {final.name} ({cls.kind}, vocab {vocab_size}) on {text_file}", flush=True)
        try:
            cls.train(text_file, vocab_size, tmp, codec, **options)
            if final.exists():  # a half-written folder of a killed run (no tokenizer.json): replace it
                shutil.rmtree(final)
            os.rename(tmp, final)  # atomic: readers see a whole model or none
        finally:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(tmp)
        return cls.load(final, codec)
