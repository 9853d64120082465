"""The sweep's one input error (a `ValueError`), raised where a setting enters: `SweepConfig`."""

from __future__ import annotations


class SweepInputError(ValueError):
    """A bad sweep setting: names the `key`, the offending `token` and the fix."""

    def __init__(self, key: str, token: str, reason: str):
        self.key, self.token, self.reason = key, token, reason
        super().__init__(f"key '{key}': bad value '{token}': {reason}")
