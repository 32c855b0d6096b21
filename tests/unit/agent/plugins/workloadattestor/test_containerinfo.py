"""The container locator on real-world /proc/<pid>/cgroup and mountinfo contents."""

from __future__ import annotations

import pytest

from spire_py.agent.plugins.workloadattestor.containerinfo import (CgroupMatchers, ContainerLocatorError,
                                                                   check_socket_template, container_id_in,
                                                                   locate_container, parse_cgroups,
                                                                   parse_mount_roots, podman_socket)

CID = "3f9c1d4e5b6a7980a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718"
OTHER = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"

DOCKER_CGROUPFS_V1 = f"""12:pids:/docker/{CID}
11:hugetlb:/docker/{CID}
10:net_prio:/docker/{CID}
9:perf_event:/docker/{CID}
8:net_cls:/docker/{CID}
7:freezer:/docker/{CID}
6:devices:/docker/{CID}
5:memory:/docker/{CID}
4:blkio:/docker/{CID}
3:cpuacct:/docker/{CID}
2:cpu:/docker/{CID}
1:cpuset:/docker/{CID}
0::/system.slice/containerd.service
"""

DOCKER_SYSTEMD_V1 = f"""12:rdma:/
11:pids:/system.slice/docker-{CID}.scope
5:memory:/system.slice/docker-{CID}.scope
1:name=systemd:/system.slice/docker-{CID}.scope
0::/system.slice/docker-{CID}.scope
"""

REAL_WORLD = [
    ("docker cgroupfs v1 (hybrid host)", DOCKER_CGROUPFS_V1, CID),
    ("docker systemd v1", DOCKER_SYSTEMD_V1, CID),
    ("docker systemd v2", f"0::/system.slice/docker-{CID}.scope\n", CID),
    ("docker cgroupfs v2 (cgroupns=host)", f"0::/docker/{CID}\n", CID),
    ("docker-in-container v2 (cgroupns=private)", f"0::/../{CID}\n", CID),
    ("podman rootful systemd v2", f"0::/machine.slice/libpod-{CID}.scope/container\n", CID),
    ("podman rootful systemd v1", f"1:name=systemd:/machine.slice/libpod-{CID}.scope/container\n"
                                  f"0::/machine.slice/libpod-{CID}.scope/container\n", CID),
    ("podman rootless v2", f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container\n", CID),
    ("podman cgroupfs", f"0::/libpod_parent/libpod-{CID}\n", CID),
    ("kubepods cgroupfs v1", f"11:pids:/kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796/{CID}\n"
                             f"1:name=systemd:/kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796/{CID}\n", CID),
    ("kubepods systemd v2 containerd",
     "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c3d4e_5f6a_7b8c_9d0e_1f2a3b4c5d6e.slice/"
     f"cri-containerd-{CID}.scope\n", CID),
    ("kubepods cri-o", f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice/crio-{CID}.scope\n", CID),
    ("ecs", f"9:perf_event:/ecs/0b2a4b9e9f1a4b5c8d7e6f5a4b3c2d1e/{CID}\n", CID),
    ("login session", "0::/user.slice/user-1000.slice/session-3.scope\n", ""),
    ("system service", "0::/system.slice/sshd.service\n", ""),
    ("root cgroup", "0::/\n", ""),
    ("hybrid host service", "12:pids:/system.slice/cron.service\n1:name=systemd:/system.slice/cron.service\n0::/system.slice/cron.service\n", ""),
    ("65 hex digits is not an ID", f"0::/docker/{CID}a\n", ""),
    ("63 hex digits is not an ID", f"0::/docker/{CID[:-1]}\n", ""),
]


def proc_with(tmp_path, cgroup=None, mountinfo=None, pid=123):
    d = tmp_path / str(pid)
    d.mkdir()
    if cgroup is not None:
        (d / "cgroup").write_text(cgroup)
    if mountinfo is not None:
        (d / "mountinfo").write_text(mountinfo)
    return str(tmp_path)


@pytest.mark.parametrize("text,want", [(t, w) for _, t, w in REAL_WORLD], ids=[n for n, _, _ in REAL_WORLD])
def test_container_id_from_real_world_cgroups(tmp_path, text, want):
    assert locate_container(123, proc_with(tmp_path, cgroup=text)) == want


def test_the_last_segment_naming_a_container_wins():
    # docker-in-docker on the cgroupfs driver: the inner container is the caller.
    assert container_id_in(f"/docker/{OTHER}/docker/{CID}") == CID
    assert container_id_in(f"/machine.slice/libpod-{CID}.scope/container") == CID


def test_two_containers_in_the_cgroups_refuse_the_process(tmp_path):
    text = f"1:name=systemd:/docker/{CID}\n0::/docker/{OTHER}\n"
    with pytest.raises(ContainerLocatorError, match="multiple container IDs found"):
        locate_container(123, proc_with(tmp_path, cgroup=text))


def test_malformed_cgroup_line_is_an_error():
    with pytest.raises(ContainerLocatorError, match="expected at least 3"):
        parse_cgroups("12-pids-/docker\n")


def test_no_proc_entry_is_not_a_container(tmp_path):
    assert locate_container(999, str(tmp_path)) == ""


MOUNTINFO_V1 = (
    "572 571 0:63 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
    f"573 572 0:33 /docker/{CID} /sys/fs/cgroup/systemd ro,nosuid master:11 - cgroup cgroup rw,name=systemd\n"
    f"574 572 0:37 /docker/{CID} /sys/fs/cgroup/memory ro,nosuid master:16 - cgroup cgroup rw,memory\n"
)
MOUNTINFO_V2 = f"1334 1313 0:27 /../{CID} /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


@pytest.mark.parametrize("mountinfo", [MOUNTINFO_V1, MOUNTINFO_V2], ids=["v1", "v2"])
def test_mountinfo_is_the_fallback_when_cgroups_name_no_container(tmp_path, mountinfo):
    assert locate_container(123, proc_with(tmp_path, cgroup="0::/\n", mountinfo=mountinfo)) == CID


def test_cgroups_win_over_a_forged_mountinfo(tmp_path):
    # A workload can bind-mount another container's cgroup; the kernel's cgroup file decides.
    forged = f"1334 1313 0:27 /../{OTHER} /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n"
    assert locate_container(123, proc_with(tmp_path, cgroup=f"0::/docker/{CID}\n", mountinfo=forged)) == CID


def test_mountinfo_ignores_other_filesystems_and_slash_roots():
    text = ("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
            f"23 22 0:5 /docker/{CID} /data rw - ext4 /dev/sdb rw\n"
            "24 22 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert parse_mount_roots(text) == []


@pytest.mark.parametrize("line,why", [
    ("22 1 8:1 / / rw ext4 /dev/sda1 rw", "missing separator"),
    ("22 1 8:1 / - ext4 /dev/sda1 rw", "at least 6 fields"),
    ("22 1 8:1 / / rw -", "missing filesystem type"),
])
def test_malformed_mountinfo_is_an_error(line, why):
    with pytest.raises(ContainerLocatorError, match=why):
        parse_mount_roots(line + "\n")


# --- legacy matchers (container_id_cgroup_matchers) ---
def test_matchers_capture_the_id_segment():
    m = CgroupMatchers(["/docker/<id>", "/my.slice/*/<id>/*"])
    assert m.find(f"/docker/{CID}") == CID
    assert m.find(f"/my.slice/a/{CID}/b") == CID
    assert m.find(f"/my.slice/a/{CID}") is None  # patterns match the whole path
    assert m.find(f"/docker/{CID}/x") is None


@pytest.mark.parametrize("patterns,why", [
    ([], "at least 1 pattern"),
    (["/docker/*"], "exactly once"),
    (["/docker/<id>/<id>"], "exactly once"),
    (["/a/b/<id>", "/*/b/<id>"], "ambiguous"),
    (["/docker/<id>", "/docker/<id>"], "ambiguous"),
])
def test_matchers_refuse_bad_patterns(patterns, why):
    with pytest.raises(ValueError, match=why):
        CgroupMatchers(patterns)


def test_matchers_locate_follows_spires_legacy_rules():
    m = CgroupMatchers(["/docker/<id>", "/blank/<id>"])
    assert m.locate(parse_cgroups(f"1:cpu:/docker/{CID}\n0::/\n")) == CID
    assert m.locate(parse_cgroups("0::/system.slice/x.service\n")) == ""
    with pytest.raises(ContainerLocatorError, match="multiple container IDs"):
        m.locate(parse_cgroups(f"1:cpu:/docker/{CID}\n0::/docker/{OTHER}\n"))
    with pytest.raises(ContainerLocatorError, match="no container id was found"):
        m.locate(parse_cgroups("0::/blank/\n"))


# --- podman sockets ---
def test_podman_containers_go_to_podmans_api():
    rootful, template = "unix:///run/podman/podman.sock", "unix:///run/user/%d/podman/podman.sock"
    assert podman_socket(parse_cgroups(f"0::/machine.slice/libpod-{CID}.scope/container\n"), rootful, template) == rootful
    rootless = f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container\n"
    assert podman_socket(parse_cgroups(rootless), rootful, template) == "unix:///run/user/1000/podman/podman.sock"
    assert podman_socket(parse_cgroups(rootless), rootful, "unix:///x/%%/%d.sock") == "unix:///x/%/1000.sock"
    assert podman_socket(parse_cgroups(f"0::/system.slice/docker-{CID}.scope\n"), rootful, template) is None


@pytest.mark.parametrize("template,ok", [
    ("unix:///run/user/%d/podman/podman.sock", True),
    ("unix:///x/%%/%d", True),
    ("unix:///run/podman.sock", False),
    ("unix:///%d/%d", False),
    ("unix:///%s/%d", False),
    ("unix:///%d/%", False),
])
def test_rootless_socket_template(template, ok):
    assert (check_socket_template(template) is None) == ok
