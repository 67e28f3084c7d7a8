#!/usr/bin/env bash
# Validates larder's Kubernetes manifests offline, against the schemas of a
# pinned Kubernetes version, strictly: an unknown or misspelt field, a missing
# required one, a wrong type or an unknown kind/apiVersion is an error.
#
#   scripts/validate-manifests.sh               every manifest under deploy/
#   scripts/validate-manifests.sh FILE...       just these files
#   scripts/validate-manifests.sh --self-test   proves that broken manifests
#                                               are rejected (and good ones not)
#
# Which files: every *.yaml/*.yml under deploy/rbac/ (all Kubernetes
# manifests), and any other YAML under deploy/ whose documents carry
# apiVersion and kind. deploy/larder.yaml (larder's own configuration) and
# non-YAML files (deploy/redis/acl.conf, deploy/postgres/grants.sql) are not
# Kubernetes manifests and are skipped.
#
# Kinds Kubernetes itself defines are checked with the kubernetes-validate
# package's schemas. PodDefault (Kubeflow's CRD) is checked with
# deploy/rbac/schemas/poddefault-kubeflow-v1alpha1.json, whose Kubernetes
# parts (volumes, env, ...) refer to the same strict Kubernetes definitions.
#
# kubernetes-validate is installed with pip into a virtualenv at
# ${LARDER_VENV:-target/pyvenv}, made on first use (needs python3 with venv
# and, the first time, PyPI). Exit status: 0 all valid, 1 something invalid
# (each error names the file, the document and the field), 2 could not run.
set -euo pipefail

caller=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Kubernetes 1.34, the API version larder's k8s-openapi is built for.
K8S_VERSION=1.34.0
KUBERNETES_VALIDATE_VERSION=1.37.0
JSONSCHEMA_VERSION=4.26.0
VENV=${LARDER_VENV:-target/pyvenv}
PODDEFAULT_SCHEMA=deploy/rbac/schemas/poddefault-kubeflow-v1alpha1.json
# YAML files under deploy/ that are not Kubernetes manifests.
NOT_MANIFESTS=(deploy/larder.yaml)

say() { printf 'validate-manifests: %s\n' "$*" >&2; }

ensure_venv() {
    local py="$VENV/bin/python"
    if [ ! -x "$py" ] || ! "$py" -c 'import sys' >/dev/null 2>&1; then
        say "creating virtualenv $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV" || {
            say "python3 -m venv failed (on Debian: apt-get install python3-venv)"
            exit 2
        }
    fi
    if ! "$py" - "$KUBERNETES_VALIDATE_VERSION" "$JSONSCHEMA_VERSION" >/dev/null 2>&1 <<'PY'
import sys
import jsonschema.validators  # noqa: F401
from importlib.metadata import version
from kubernetes_validate.version import __version__
sys.exit(0 if (__version__, version("jsonschema")) == tuple(sys.argv[1:3]) else 1)
PY
    then
        say "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $VENV"
        "$py" -m pip install --quiet --disable-pip-version-check \
            "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
            "jsonschema==$JSONSCHEMA_VERSION" || {
            say "pip install failed"
            exit 2
        }
    fi
}

# The validator. Arguments: MODE FILE... where MODE is `strict` (every
# document must be a Kubernetes object) or `auto` (a file none of whose
# documents has apiVersion and kind is skipped as not a manifest).
IFS= read -r -d '' VALIDATOR <<'PY' || true
import os
import sys

import importlib_resources
import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

K8S_VERSION = os.environ["K8S_VERSION"]
PODDEFAULT_SCHEMA = os.environ["PODDEFAULT_SCHEMA"]


class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (the API server does too)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %r" % (key,), key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def field_path(path):
    out = ""
    for part in path:
        out += "[%d]" % part if isinstance(part, int) else (
            "." + part if out else part)
    return out or "(document)"


def k8s_definitions():
    name = "v%s-local-strict" % K8S_VERSION
    ref = (importlib_resources.files("kubernetes_validate")
           / "kubernetes-json-schema" / name / "_definitions.json")
    if not ref.is_file():
        sys.exit("validate-manifests: kubernetes-validate %s has no schemas for "
                 "Kubernetes %s" % (kubernetes_validate.__version__, K8S_VERSION))
    import json
    return json.loads(ref.read_text())


def poddefault_validator():
    import json
    with open(PODDEFAULT_SCHEMA) as f:
        schema = json.load(f)
    registry = Resource.from_contents(k8s_definitions()) @ Registry()
    cls = jsonschema.validators.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema, registry=registry)


PODDEFAULT = poddefault_validator()


def check(doc):
    """The errors of one document, as (path, message)."""
    if not isinstance(doc, dict):
        return [("(document)", "not a mapping but %s" % type(doc).__name__)]
    missing = [k for k in ("apiVersion", "kind") if not isinstance(doc.get(k), str)]
    if missing:
        return [("(document)", "%s missing or not a string" % " and ".join(missing))]
    errors = []
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        errors.append(("metadata.name", "every object needs a name"))
    if (doc["apiVersion"], doc["kind"]) == ("kubeflow.org/v1alpha1", "PodDefault"):
        for e in sorted(PODDEFAULT.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
            errors.append((field_path(e.absolute_path), e.message))
        return errors
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as e:
        errors.append((field_path(e.absolute_path), e.message))
    except kv.SchemaNotFoundError:
        errors.append(("(document)",
                       "no schema for kind %s in apiVersion %s (Kubernetes %s): a typo, "
                       "or a custom resource this script has no schema for"
                       % (doc["kind"], doc["apiVersion"], K8S_VERSION)))
    return errors


def describe(doc):
    if isinstance(doc, dict):
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        return " (%s %s)" % (doc.get("kind", "?"), meta.get("name", "?"))
    return ""


def main(mode, files):
    failed = 0
    for path in files:
        try:
            with open(path) as f:
                docs = list(yaml.load_all(f, Loader=StrictLoader))
        except (OSError, yaml.YAMLError) as e:
            print("FAIL %s: not valid YAML: %s" % (path, str(e).replace("\n", " ")))
            failed += 1
            continue
        numbered = [(i + 1, d) for i, d in enumerate(docs) if d is not None]
        if mode == "auto" and not any(
                isinstance(d, dict) and "apiVersion" in d and "kind" in d for _, d in numbered):
            print("skip %s: no apiVersion/kind, not a Kubernetes manifest" % path)
            continue
        if not numbered:
            print("FAIL %s: no documents" % path)
            failed += 1
            continue
        bad = 0
        for n, doc in numbered:
            for where, message in check(doc):
                print("FAIL %s: document %d%s: %s: %s" % (path, n, describe(doc), where, message))
                bad += 1
        if bad:
            failed += 1
        else:
            print("ok   %s: %d document(s)" % (path, len(numbered)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
PY

validate() {
    K8S_VERSION=$K8S_VERSION PODDEFAULT_SCHEMA=$PODDEFAULT_SCHEMA \
        "$VENV/bin/python" -c "$VALIDATOR" "$@"
}

validate_deploy() {
    local strict=() auto=() f skip x
    while IFS= read -r f; do
        strict+=("$f")
    done < <(find deploy/rbac -type f \( -name '*.yaml' -o -name '*.yml' \) | LC_ALL=C sort)
    while IFS= read -r f; do
        skip=0
        for x in "${NOT_MANIFESTS[@]}"; do
            if [ "$f" = "$x" ]; then skip=1; fi
        done
        if [ "$skip" -eq 1 ]; then
            echo "skip $f: larder's configuration, not a Kubernetes manifest"
        else
            auto+=("$f")
        fi
    done < <(find deploy -path deploy/rbac -prune -o -type f \( -name '*.yaml' -o -name '*.yml' \) -print | LC_ALL=C sort)
    if [ "${#strict[@]}" -eq 0 ]; then
        say "no manifests found under deploy/rbac"
        return 2
    fi
    local rc=0
    validate strict "${strict[@]}" || rc=$?
    if [ "${#auto[@]}" -gt 0 ]; then
        validate auto "${auto[@]}" || { local r=$?; [ "$r" -gt "$rc" ] && rc=$r; }
    fi
    return "$rc"
}

# --self-test: broken samples must be rejected, each for its own reason and
# naming its file and document; good samples must pass.
self_test() {
    local dir
    dir=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$dir'" EXIT

    cat >"$dir/good-clusterrole.yaml" <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: sample
  labels:
    rbac.authorization.kubeflow.org/aggregate-to-kubeflow-view: "true"
rules:
  - apiGroups: [features.kubeflow.org]
    resources: [featureviews]
    verbs: [get]
EOF
    cat >"$dir/good-poddefault.yaml" <<'EOF'
apiVersion: kubeflow.org/v1alpha1
kind: PodDefault
metadata:
  name: sample
  namespace: kubeflow-alice
spec:
  desc: sample
  selector:
    matchLabels:
      sample: "true"
  volumes:
    - name: t
      projected:
        sources:
          - serviceAccountToken: {audience: features.kubeflow.org, path: token}
  volumeMounts:
    - {name: t, mountPath: /var/run/secrets/larder}
  env:
    - {name: A, value: b}
EOF
    # A typo in a top-level field of a ClusterRole.
    sed 's/^rules:/rule:/' "$dir/good-clusterrole.yaml" >"$dir/bad-rule-typo.yaml"
    # PodDefault without its description.
    grep -v '^  desc:' "$dir/good-poddefault.yaml" >"$dir/bad-poddefault-no-desc.yaml"
    # A typo deep inside a PodDefault's volume (a core/v1 Volume).
    sed 's/audience:/audiance:/' "$dir/good-poddefault.yaml" >"$dir/bad-poddefault-volume.yaml"
    # An env entry without its name.
    sed 's/{name: A, value: b}/{value: b}/' "$dir/good-poddefault.yaml" >"$dir/bad-poddefault-env.yaml"
    # A label value YAML reads as a boolean.
    sed 's/"true"/true/' "$dir/good-clusterrole.yaml" >"$dir/bad-label-bool.yaml"
    # A misspelt apiVersion: no such kind.
    sed 's#rbac.authorization.k8s.io/v1#rbac.authorization.k8s.io/v2#' \
        "$dir/good-clusterrole.yaml" >"$dir/bad-apiversion.yaml"
    # The second document of a file is the broken one: a RoleBinding with no roleRef.
    {
        cat "$dir/good-clusterrole.yaml"
        printf -- '---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n'
        printf 'metadata: {name: b, namespace: n}\nsubjects: [{kind: User, name: bob}]\n'
    } >"$dir/bad-second-document.yaml"
    # A key given twice (YAML would silently keep the last).
    {
        cat "$dir/good-clusterrole.yaml"
        printf '    verbs: [list]\n'
    } >"$dir/bad-duplicate-key.yaml"
    # Not YAML at all.
    printf 'kind: ClusterRole\nrules: [\n' >"$dir/bad-yaml.yaml"

    # sample|what its rejection must say
    local cases=(
        "bad-rule-typo.yaml|document 1 (ClusterRole sample): (document): Additional properties are not allowed ('rule' was unexpected)"
        "bad-poddefault-no-desc.yaml|document 1 (PodDefault sample): spec: 'desc' is a required property"
        "bad-poddefault-volume.yaml|spec.volumes[0].projected.sources[0].serviceAccountToken: Additional properties are not allowed ('audiance' was unexpected)"
        "bad-poddefault-env.yaml|spec.env[0]: 'name' is a required property"
        "bad-label-bool.yaml|metadata.labels.rbac.authorization.kubeflow.org/aggregate-to-kubeflow-view: True is not of type"
        "bad-apiversion.yaml|no schema for kind ClusterRole in apiVersion rbac.authorization.k8s.io/v2"
        "bad-second-document.yaml|document 2 (RoleBinding b): (document): 'roleRef' is a required property"
        "bad-duplicate-key.yaml|duplicate key 'verbs'"
        "bad-yaml.yaml|not valid YAML"
    )
    local failures=0 c sample want out rc
    for sample in good-clusterrole.yaml good-poddefault.yaml; do
        if out=$(validate strict "$dir/$sample" 2>&1); then
            echo "self-test ok: $sample accepted"
        else
            echo "self-test FAILED: good sample $sample was rejected:"
            printf '%s\n' "$out"
            failures=$((failures + 1))
        fi
    done
    for c in "${cases[@]}"; do
        sample=${c%%|*}
        want=${c#*|}
        rc=0
        out=$(validate strict "$dir/$sample" 2>&1) || rc=$?
        if [ "$rc" -eq 0 ]; then
            echo "self-test FAILED: broken sample $sample was accepted"
            failures=$((failures + 1))
        elif [ "$rc" -ne 1 ]; then
            echo "self-test FAILED: $sample: validator crashed (exit $rc):"
            printf '%s\n' "$out"
            failures=$((failures + 1))
        elif [[ "$out" != *"FAIL $dir/$sample"*"$want"* ]]; then
            echo "self-test FAILED: $sample rejected, but not with: $want"
            printf '%s\n' "$out"
            failures=$((failures + 1))
        else
            echo "self-test ok: $sample rejected: ${out#"FAIL $dir/"}"
        fi
    done
    if [ "$failures" -gt 0 ]; then
        say "self-test: $failures sample(s) misjudged"
        return 1
    fi
    say "self-test: all $((${#cases[@]} + 2)) samples judged as expected"
}

ensure_venv
case "${1:-}" in
    --self-test)
        self_test
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' scripts/validate-manifests.sh | sed '$d; s/^# \{0,1\}//'
        ;;
    "")
        validate_deploy
        ;;
    *)
        files=()
        for f in "$@"; do
            case "$f" in
                /*) files+=("$f") ;;
                *) files+=("$caller/$f") ;;
            esac
        done
        validate strict "${files[@]}"
        ;;
esac
