# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Durations as SPIRE writes them ("720h", "1h30m") plus days ("30d") and bare seconds."""

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+)([smhd])")


def parse_duration(value):
    """Return seconds for an int, a digit string, or a string such as "8760h" or "1d12h"."""
    if isinstance(value, bool):
        raise ValueError("invalid duration %r" % (value,))
    if isinstance(value, int):
        if value < 0:
            raise ValueError("invalid duration %r: negative" % (value,))
        return value
    text = str(value).strip().lower()
    if text.isdigit():
        return int(text)
    pos = 0
    total = 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError('invalid duration "%s": use e.g. "720h", "30d", "1h30m" or seconds' % (value,))
    return total
