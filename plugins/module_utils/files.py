# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Atomic writes of key material: the file is never seen half-written or with loose permissions."""

import grp
import os
import pwd
import tempfile


def read_bytes(path):
    """Return the file's content, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def atomic_write(path, data, mode=0o600):
    """Write data to path through a temp file in the same directory (fsync + rename).

    The directory must exist: modules create it with its owner first (ensure_directories),
    so a root-owned directory never locks the service user out of its own key.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise IOError("directory %s does not exist" % directory)
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


def check_owner(module, owner=None, group=None):
    """Fail before anything is written when owner or group does not exist on this host
    (afterwards the files would stay root-owned and the service user locked out)."""
    for name, lookup, what in ((owner, pwd.getpwnam, "user"), (group, grp.getgrnam, "group")):
        if not name or str(name).isdigit():
            continue
        try:
            lookup(name)
        except KeyError:
            module.fail_json(msg="%s %s does not exist on this host: nothing was written" % (what, name))


def ensure_directories(module, paths, owner=None, group=None, mode=0o700):
    """Create the missing parent directories of paths, each with mode, owner and group.

    Only directories this call creates get the owner: an existing directory is the
    operator's. In check mode nothing is created and the change is reported. An owner or
    group that does not exist fails the module before anything is created.
    """
    check_owner(module, owner, group)
    changed = False
    for path in paths:
        if not path:
            continue
        missing = []
        directory = os.path.dirname(os.path.abspath(path))
        while directory and not os.path.isdir(directory):
            missing.append(directory)
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
        for directory in reversed(missing):
            changed = True
            if module.check_mode:
                continue
            os.mkdir(directory, mode)
            os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
            if owner:
                module.set_owner_if_different(directory, owner, False)
            if group:
                module.set_group_if_different(directory, group, False)
    return changed


def backup_files(module, paths):
    """Copy each existing path aside as Ansible's backup=true does; returns {path: backup path}."""
    made = {}
    for path in paths:
        if path and os.path.exists(path):
            made[path] = module.backup_local(path)
    return made


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
