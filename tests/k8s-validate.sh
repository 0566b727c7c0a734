#!/usr/bin/env bash
# Schema check of the Kubernetes manifests in deploy/kubernetes/ (`make k8s-check`).
#
# Every resource is validated, strictly (an unknown field is an error), against the
# Kubernetes OpenAPI schemas of each version in K8S_VERSIONS, by the PyPI package
# kubernetes-validate, which carries those schemas inside the package: nothing is fetched at
# run time, so the check needs no network once pip has installed it into target/k8s-venv.
# A kind with no schema is an error here (the tool itself only warns). kustomization.yaml is
# not a Kubernetes resource: it is checked on its own (every resource it lists exists, and
# every manifest of the directory is listed).
#
# Usage: tests/k8s-validate.sh [FILE.yaml...]    (default: deploy/kubernetes/*.yaml)
# Exit status: 0 all valid, 1 a manifest is invalid, 2 the validator could not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

KV_VERSION=1.37.0                       # kubernetes-validate; bundles schemas 1.25 … 1.37
K8S_VERSIONS=${K8S_VERSIONS:-"1.30 1.37"}  # oldest supported (appArmorProfile) and newest
VENV=target/k8s-venv

if ! "$VENV/bin/python" -c "import kubernetes_validate.version as v, sys; sys.exit(v.__version__ != '$KV_VERSION')" 2>/dev/null; then
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    else
      echo "k8s-validate: python3 -m venv failed (install python3-venv)" >&2
      exit 2
    fi
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION" || {
    echo "k8s-validate: cannot install kubernetes-validate==$KV_VERSION from PyPI" >&2
    exit 2
  }
fi

if (($#)); then files=("$@"); else files=(deploy/kubernetes/*.yaml); fi

exec "$VENV/bin/python" - "$K8S_VERSIONS" "${files[@]}" <<'PY'
import os
import re
import sys

import jsonschema
import yaml
from referencing import Registry, Resource
from kubernetes_validate import utils as kv

versions = sys.argv[1].split()
files = sys.argv[2:]
passed = failed = 0


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would keep the last one silently)."""


def construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)


def all_errors(doc, version):
    """Every schema error of `doc` (kubernetes_validate.validate stops at the first), with
    the same bundled, strict schemas and no network: a $ref the registry does not hold is
    an error, never a download."""
    bundled = [x for x in kv.all_versions() if kv.major_minor(x) == version]
    if not bundled:
        raise kv.VersionNotSupportedError(version)
    schema_dir = "kubernetes-json-schema/v%s-local-strict" % bundled[-1]
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    try:
        schema = kv.schema_contents(
            "%s/%s-%s.json" % (schema_dir, doc["kind"].lower(), api), version)
    except FileNotFoundError:
        raise kv.SchemaNotFoundError(kind=doc["kind"], version=version,
                                     api_version=doc["apiVersion"])
    defs = kv.schema_contents(schema_dir + "/_definitions.json", version)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return sorted(
        "%s: %s" % (".".join(str(p) for p in e.absolute_path) or "(top)", e.message)
        for e in validator.iter_errors(doc))


def fail(where, msg):
    global failed
    failed += 1
    print(f"FAIL {where}: {msg}")


def load(path):
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=StrictLoader) if d is not None]


KUSTOMIZE_KEYS = {
    "apiVersion", "kind", "metadata", "namespace", "namePrefix", "nameSuffix", "labels",
    "commonLabels", "commonAnnotations", "resources", "components", "images", "replicas",
    "patches", "configMapGenerator", "secretGenerator", "generatorOptions", "configurations",
}


def check_kustomization(path):
    global passed
    d = os.path.dirname(path) or "."
    docs = load(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        return fail(path, "expected one mapping")
    k = docs[0]
    errors = []
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        errors.append("apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
    unknown = set(k) - KUSTOMIZE_KEYS
    if unknown:
        errors.append(f"unknown keys {sorted(unknown)}")
    listed = k.get("resources") or []
    for r in listed:
        if not os.path.isfile(os.path.join(d, r)):
            errors.append(f"resource {r} does not exist")
    for f in sorted(os.listdir(d)):
        if f.endswith((".yaml", ".yml")) and f != os.path.basename(path) and f not in listed:
            errors.append(f"{f} is not listed in resources")
    for e in errors:
        fail(path, e)
    if not errors:
        passed += 1
        print(f"ok   {path}: Kustomization, {len(listed)} resources")


for path in files:
    if os.path.basename(path) in ("kustomization.yaml", "kustomization.yml"):
        check_kustomization(path)
        continue
    try:
        docs = load(path)
    except (OSError, yaml.YAMLError) as e:
        fail(path, f"cannot read YAML: {e}")
        continue
    if not docs:
        fail(path, "no resource in the file")
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            fail(path, "a document without apiVersion and kind")
            continue
        name = (doc.get("metadata") or {}).get("name")
        what = f"{path}: {doc['kind']}/{name}"
        if not name:
            fail(what, "metadata.name missing")
            continue
        ok = True
        for v in versions:
            try:
                errors = all_errors(doc, v)
            except (kv.SchemaNotFoundError, kv.VersionNotSupportedError) as e:
                errors = [e.message]
            for e in errors:
                ok = False
                fail(what, f"Kubernetes {v}: {e}")
        if ok:
            passed += 1
            print(f"ok   {what} (Kubernetes {', '.join(versions)}, strict)")

print(f"k8s: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
