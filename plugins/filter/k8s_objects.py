# -*- coding: utf-8 -*-
# Copyright (c) spire_py contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
---
name: k8s_objects
short_description: Adapt the objects of spire_py's Kustomize base to an inventory
version_added: "0.1.0"
author:
  - spire_py maintainers (@spire-py)
description:
  - Takes the objects of C(deploy/kubernetes) (as C(from_yaml_all) reads them) and returns
    copies with the namespace, the image and ConfigMap data set, as the Kustomize base's
    C(namespace) and C(images) fields and a ConfigMap patch would, so that
    C(playbooks/kubernetes.yml) applies the same objects that C(kubectl apply -k) does.
  - The namespace is set on every namespaced object, on the C(Namespace) object itself and on
    the service accounts named as subjects of (Cluster)RoleBindings.
  - The image replaces the image of every container and init container that runs O(image_name).
options:
  _input:
    description: The objects, a list of dicts.
    type: list
    elements: dict
    required: true
  namespace:
    description: Namespace of the deployment; empty keeps the base's.
    type: str
    default: ""
  image:
    description: Image reference to run; empty keeps the base's.
    type: str
    default: ""
  image_name:
    description: The image (without tag) that O(image) replaces.
    type: str
    default: localhost/spire_py
  config_data:
    description: ConfigMap name to a dict of keys and values that replace its data.
    type: dict
    default: {}
  labels:
    description: Labels added to every object's metadata (as the base's C(labels) field, without selectors).
    type: dict
    default: {}
  template_annotations:
    description:
      - C(Kind/name) to annotations added to that workload's pod template, e.g. a checksum of
        its configuration, so that a changed configuration rolls its pods.
    type: dict
    default: {}
  exclude:
    description: Objects left out, as C(Kind/name).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: The base's objects for this inventory
  ansible.builtin.set_fact:
    objects: >-
      {{ lookup('ansible.builtin.file', 'deploy/kubernetes/agent-daemonset.yaml')
         | ansible.builtin.from_yaml_all | list
         | spire_py.spire.k8s_objects(namespace='spire-system', image='registry.example/spire_py:0.1.0') }}
"""

RETURN = r"""
_value:
  description: The adapted objects (copies; the input is not changed).
  type: list
  elements: dict
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass"}


def _plain(value):
    # Plain dicts, lists and strs: Ansible hands filters lazily templated containers, whose
    # nested items may be fresh copies on every access (an edit to one would be lost).
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _pod_spec(obj):
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return spec
    return ((spec.get("template") or {}).get("spec")) or None


def _image_repo(ref):
    # The reference without its tag or digest (a registry port's colon stays).
    ref = ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref[:colon] if colon > slash else ref


def k8s_objects(objects, namespace="", image="", image_name="localhost/spire_py", config_data=None, exclude=None,
                labels=None, template_annotations=None):
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise AnsibleFilterError("k8s_objects: the input must be a list of Kubernetes objects (dicts)")
    config_data = config_data or {}
    excluded = set(exclude or [])
    seen_config = set()
    out = []
    annotations = _plain(template_annotations or {})
    for original in objects:
        ref = "%s/%s" % (original.get("kind"), (original.get("metadata") or {}).get("name"))
        if ref in excluded:
            continue
        obj = _plain(original)
        kind = obj.get("kind")
        meta = obj.setdefault("metadata", {})
        if labels:
            meta["labels"] = dict(meta.get("labels") or {}, **_plain(labels))
        if namespace:
            if kind == "Namespace":
                meta["name"] = namespace
            elif kind not in CLUSTER_SCOPED:
                meta["namespace"] = namespace
            for subject in obj.get("subjects") or []:
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = namespace
        if image:
            pod = _pod_spec(obj)
            for c in (pod or {}).get("containers", []) + (pod or {}).get("initContainers", []):
                if _image_repo(c.get("image", "")) == image_name:
                    c["image"] = image
        if ref in annotations:
            template = (obj.get("spec") or {}).get("template")
            if not isinstance(template, dict):
                raise AnsibleFilterError("k8s_objects: %s has no pod template to annotate" % ref)
            tmeta = template.setdefault("metadata", {})
            tmeta["annotations"] = dict(tmeta.get("annotations") or {}, **annotations[ref])
        if kind == "ConfigMap" and meta.get("name") in config_data:
            data = config_data[meta["name"]]
            if not isinstance(data, dict):
                raise AnsibleFilterError("k8s_objects: config_data[%r] must be a dict of keys and values" % meta["name"])
            obj["data"] = {str(k): str(v) for k, v in data.items()}
            seen_config.add(meta["name"])
        out.append(obj)
    missing = sorted(set(config_data) - seen_config)
    if missing:
        raise AnsibleFilterError("k8s_objects: no ConfigMap named %s among the objects" % ", ".join(missing))
    return out


class FilterModule:
    def filters(self):
        return {"k8s_objects": k8s_objects}
