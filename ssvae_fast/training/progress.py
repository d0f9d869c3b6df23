"""The progress bar of long training work (tqdm on stderr), or nothing."""

from __future__ import annotations

import sys


class NoProgress:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def progress_bar(total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
    if not enabled:
        return NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr)
