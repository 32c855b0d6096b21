# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The server's admin API through its own CLI (`spire-server ... -output json`) on the server host.

The CLI speaks SPIRE's flags and prints the API responses as protojson, so these
calls work the same against spire_py and SPIRE. The runner is injected (AnsibleModule's
run_command in modules, a fake or subprocess in tests).
"""

import json

DEFAULT_BIN = "/opt/spire/bin/spire-server"
DEFAULT_SOCKET = "/run/spire-server/private/api.sock"


class SpireCLIError(Exception):
    def __init__(self, message, rc=None, stderr=""):
        super().__init__(message)
        self.rc = rc
        self.stderr = stderr


class ServerCLI:
    def __init__(self, run, binary=DEFAULT_BIN, socket_path=DEFAULT_SOCKET):
        """run(argv) -> (rc, stdout, stderr)."""
        self._run = run
        self.binary = binary
        self.socket_path = socket_path

    def call(self, words, flags, json_output=True):
        argv = [self.binary] + list(words) + ["-socketPath", self.socket_path]
        for name, value in flags:
            if isinstance(value, bool):
                argv.append("-%s=%s" % (name, "true" if value else "false"))
            else:
                argv.extend(["-" + name, str(value)])
        if json_output:
            argv.extend(["-output", "json"])
        rc, out, err = self._run(argv)
        if rc != 0:
            detail = (err or out or "").strip()
            raise SpireCLIError("%s failed (exit %s): %s" % (" ".join(words), rc, detail), rc, err)
        if not json_output:
            return out
        try:
            return json.loads(out)
        except ValueError:
            raise SpireCLIError("%s printed something that is not JSON: %r" % (" ".join(words), out[:200]))

    def generate_token(self, ttl, spiffe_id=None):
        flags = [("ttl", ttl)]
        if spiffe_id:
            flags.append(("spiffeID", spiffe_id))
        doc = self.call(["token", "generate"], flags)
        if not isinstance(doc, dict) or not doc.get("value"):
            raise SpireCLIError("token generate returned no token")
        return doc

    def show_entries(self, spiffe_id=None, parent_id=None):
        flags = []
        if spiffe_id:
            flags.append(("spiffeID", spiffe_id))
        if parent_id:
            flags.append(("parentID", parent_id))
        doc = self.call(["entry", "show"], flags)
        return list(doc.get("entries") or []) if isinstance(doc, dict) else []

    def _batch(self, words, flags):
        doc = self.call(words, flags)
        results = doc.get("results") if isinstance(doc, dict) else None
        if not results:
            raise SpireCLIError("%s returned no result" % " ".join(words))
        status = results[0].get("status") or {}
        code = int(status.get("code") or 0)
        if code != 0:
            raise SpireCLIError("%s: %s (code %s)" % (" ".join(words), status.get("message", ""), code))
        return results[0]

    def create_entry(self, flags):
        return self._batch(["entry", "create"], flags).get("entry") or {}

    def update_entry(self, entry_id, flags):
        return self._batch(["entry", "update"], [("entryID", entry_id)] + list(flags)).get("entry") or {}

    def delete_entry(self, entry_id):
        self._batch(["entry", "delete"], [("entryID", entry_id)])
