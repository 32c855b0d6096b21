# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Atomic writes of key material: the file is never seen half-written or with loose permissions."""

import os
import tempfile


def read_bytes(path):
    """Return the file's content, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def atomic_write(path, data, mode=0o600):
    """Write data to path through a temp file in the same directory (fsync + rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def apply_attributes(module, path, mode, owner=None, group=None, changed=False):
    """Mode/owner/group through AnsibleModule (honours check mode); absent files are skipped."""
    if not os.path.exists(path):
        return changed
    changed = module.set_mode_if_different(path, mode, changed)
    if owner:
        changed = module.set_owner_if_different(path, owner, changed)
    if group:
        changed = module.set_group_if_different(path, group, changed)
    return changed


def diff_of(path, before_text, after_text):
    return {"before": before_text, "after": after_text, "before_header": path, "after_header": path}
