# -*- coding: utf-8 -*-
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""containers.podman's podman connection with pipelining, for the fleet's hosts.

The upstream plugin turns pipelining off because it runs ``podman exec`` without ``-i``, so a
module piped on stdin never arrives; with ``-i`` it does. A module then costs one
``podman exec`` instead of five (mkdir, put, chmod, run, rm), which halves a converge.
Molecule's podman driver names the connection ``podman``; this directory is first on
ANSIBLE_CONNECTION_PLUGINS (scripts/fleet.sh sets it), so this class answers to it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: podman
    short_description: Run tasks in an existing podman container, with pipelining
    description:
      - Like containers.podman.podman (whose options it takes), with C(podman exec -i) so that
        modules can be piped in.
    author: spire_py maintainers (@spire-py)
    extends_documentation_fragment:
      - connection_pipelining
    options:
      remote_addr:
        description: The container.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: User in the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments of the podman command line.
        default: ''
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description: The podman executable.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
"""

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible_collections.containers.podman.plugins.connection.podman import (
    Connection as PodmanConnection, ensure_connect)


class Connection(PodmanConnection):
    transport = "podman"
    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        if in_data is None:
            return super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        # The base class of the podman plugin only records the command here.
        super(PodmanConnection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        args = ["exec", "-i"]
        if self.user:
            args.extend(("--user", self.user))
        return self._podman(args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)
