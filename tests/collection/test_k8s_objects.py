"""k8s_objects: the Kustomize base's objects adapted as `namespace`/`images` and a ConfigMap patch would."""

import pytest

pytest.importorskip("ansible")

from ansible.errors import AnsibleFilterError  # noqa: E402
from ansible_collections.spire_py.spire.plugins.filter.k8s_objects import k8s_objects  # noqa: E402

POD = {"kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "spire"},
       "spec": {"template": {"spec": {
           "initContainers": [{"name": "init", "image": "localhost/spire_py:0.1.0"}],
           "containers": [{"name": "agent", "image": "localhost/spire_py@sha256:abcd"},
                          {"name": "sidecar", "image": "localhost/spire_py_other:1"}]}}}}
BINDING = {"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
           "subjects": [{"kind": "ServiceAccount", "name": "spire-agent", "namespace": "spire"},
                        {"kind": "Group", "name": "system:nodes"}]}
OBJECTS = [{"kind": "Namespace", "metadata": {"name": "spire"}}, POD, BINDING,
           {"kind": "ConfigMap", "metadata": {"name": "spire-agent", "namespace": "spire"}, "data": {"a": "1"}}]


def test_namespace_image_and_config_are_set_and_the_input_is_untouched():
    out = k8s_objects(OBJECTS, namespace="ops", image="reg.example:5000/spire_py:2",
                      config_data={"spire-agent": {"agent.conf": "agent {}\n"}}, labels={"part-of": "spire"})
    ns, pod, binding, cm = out
    assert ns["metadata"]["name"] == "ops"
    assert "namespace" not in ns["metadata"] and "namespace" not in binding["metadata"]
    assert pod["metadata"]["namespace"] == "ops" and cm["metadata"]["namespace"] == "ops"
    spec = pod["spec"]["template"]["spec"]
    assert [c["image"] for c in spec["initContainers"] + spec["containers"]] == \
        ["reg.example:5000/spire_py:2", "reg.example:5000/spire_py:2", "localhost/spire_py_other:1"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spire-agent", "namespace": "ops"},
                                   {"kind": "Group", "name": "system:nodes"}]
    assert cm["data"] == {"agent.conf": "agent {}\n"}
    assert all(o["metadata"]["labels"] == {"part-of": "spire"} for o in out)
    assert "labels" not in OBJECTS[0]["metadata"]
    assert OBJECTS[1]["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost/spire_py@sha256:abcd"
    assert OBJECTS[3]["data"] == {"a": "1"}


def test_empty_settings_keep_the_base_and_exclude_drops_objects():
    out = k8s_objects(OBJECTS, exclude=["DaemonSet/agent"])
    assert [o["kind"] for o in out] == ["Namespace", "ClusterRoleBinding", "ConfigMap"]
    assert out == [OBJECTS[0], OBJECTS[2], OBJECTS[3]]


def test_config_for_a_configmap_that_is_not_there_is_refused():
    with pytest.raises(AnsibleFilterError, match="no ConfigMap named spire-server"):
        k8s_objects(OBJECTS, config_data={"spire-server": {"server.conf": ""}})


def test_input_that_is_not_a_list_of_objects_is_refused():
    with pytest.raises(AnsibleFilterError, match="list of Kubernetes objects"):
        k8s_objects({"kind": "Namespace"})


def test_template_annotations_go_on_the_pod_template_only():
    out = k8s_objects(OBJECTS, template_annotations={"DaemonSet/agent": {"checksum/config": "abc"}})
    assert out[1]["spec"]["template"]["metadata"] == {"annotations": {"checksum/config": "abc"}}
    assert "annotations" not in out[1]["metadata"]
    with pytest.raises(AnsibleFilterError, match="ConfigMap/spire-agent has no pod template"):
        k8s_objects(OBJECTS, template_annotations={"ConfigMap/spire-agent": {"a": "b"}})
