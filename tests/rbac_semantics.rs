//! Kubernetes' RBAC semantics, case by case, against larder's in-process
//! evaluator (`larder::auth::rbac`).
//!
//! Every row of the tables below says what the Kubernetes API server's RBAC
//! authorizer (with the ClusterRole aggregation controller having done its
//! work) answers for one request. The evaluator must answer the same: a row
//! it gets wrong is a deviation from Kubernetes, reported with the row's
//! description.
//!
//! The fixtures give each rule or binding under test its own user, so a row
//! tests one thing. The story fixture is the real manifests of
//! deploy/rbac/ (with the Kubeflow roles of deploy/rbac/testdata/) plus the
//! RoleBindings Kubeflow's profile controller makes for each profile.

use std::path::Path;

use larder::auth::rbac::{Policy, Request, UserInfo};

const FEATURES: &str = "features.kubeflow.org";

/// Which set of RBAC objects a case is asked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixture {
    Rules,
    Aggregation,
    Bindings,
    /// Manifests Kubernetes would place or refuse differently from what
    /// they seem to say; an evaluator that refuses to load them is right
    /// too (it then grants nothing).
    Questionable,
    Story,
}

/// One request and Kubernetes' answer to it.
struct Case {
    what: &'static str,
    fixture: Fixture,
    user: &'static str,
    groups: &'static [&'static str],
    verb: &'static str,
    api_group: &'static str,
    resource: &'static str,
    /// Empty: a cluster-scoped request (e.g. a list across namespaces).
    namespace: &'static str,
    /// Empty: the request names no object (list, create, ...).
    name: &'static str,
    allowed: bool,
}

/// A request of `user` (no groups) in larder's API group.
const fn case(
    what: &'static str,
    fixture: Fixture,
    user: &'static str,
    (verb, resource, namespace, name): (&'static str, &'static str, &'static str, &'static str),
    allowed: bool,
) -> Case {
    Case {
        what,
        fixture,
        user,
        groups: &[],
        verb,
        api_group: FEATURES,
        resource,
        namespace,
        name,
        allowed,
    }
}

impl Case {
    const fn groups(self, groups: &'static [&'static str]) -> Case {
        Case { groups, ..self }
    }

    const fn api_group(self, api_group: &'static str) -> Case {
        Case { api_group, ..self }
    }
}

use Fixture::{Aggregation, Bindings, Questionable, Rules, Story};

const ALICE: &str = "kubeflow-alice";
const BOB: &str = "kubeflow-bob";
const ANY_NS: &str = "";
const NO_NAME: &str = "";

/// The groups Kubernetes gives a service account of `ns`.
macro_rules! sa_groups {
    ($ns:literal) => {
        &[
            "system:serviceaccounts",
            concat!("system:serviceaccounts:", $ns),
            "system:authenticated",
        ]
    };
}

// ---------------------------------------------------------------------------
// Rule matching: verbs, apiGroups, resources, resourceNames.

/// A ClusterRole `name` with `rules` (a YAML flow sequence), bound with a
/// ClusterRoleBinding to the User `name`.
fn grant(name: &str, rules: &str) -> String {
    format!(
        "---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{ name: {name} }}
rules: {rules}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{ name: {name} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name} }}
subjects: [{{ apiGroup: rbac.authorization.k8s.io, kind: User, name: {name} }}]
"
    )
}

fn rules_fixture() -> String {
    let fv = "apiGroups: [features.kubeflow.org], resources: [featureviews]";
    [
        grant("verbs-star", &format!("[{{ {fv}, verbs: ['*'] }}]")),
        grant("verbs-get", &format!("[{{ {fv}, verbs: [get] }}]")),
        grant(
            "groups-star",
            "[{ apiGroups: ['*'], resources: [featureviews], verbs: [get] }]",
        ),
        grant(
            "groups-core",
            "[{ apiGroups: [''], resources: [featureviews], verbs: [get] }]",
        ),
        grant(
            "resources-star",
            "[{ apiGroups: [features.kubeflow.org], resources: ['*'], verbs: [get] }]",
        ),
        grant(
            "resources-sub",
            "[{ apiGroups: [features.kubeflow.org], resources: [featureviews/materializations], verbs: [get, create] }]",
        ),
        grant(
            "resources-any-sub",
            "[{ apiGroups: [features.kubeflow.org], resources: ['*/materializations'], verbs: [get, create] }]",
        ),
        grant(
            "resources-parent-star",
            "[{ apiGroups: [features.kubeflow.org], resources: ['featureviews/*'], verbs: [get] }]",
        ),
        grant(
            "names",
            &format!(
                "[{{ {fv}, resourceNames: [driver_daily_stats], \
                 verbs: [get, list, watch, create, update, patch, delete, deletecollection] }}]"
            ),
        ),
        grant(
            "names-any-verb",
            &format!("[{{ {fv}, resourceNames: [driver_daily_stats], verbs: ['*'] }}]"),
        ),
        grant(
            "names-star",
            &format!("[{{ {fv}, resourceNames: ['*'], verbs: [get] }}]"),
        ),
        grant(
            "two-rules",
            "[{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [get] },
              { apiGroups: [features.kubeflow.org], resources: [entities], verbs: [list] }]",
        ),
        grant("no-verbs", &format!("[{{ {fv}, verbs: [] }}]")),
        grant(
            "non-resource",
            "[{ nonResourceURLs: ['*'], verbs: ['*'] }]",
        ),
    ]
    .concat()
}

const RULE_CASES: &[Case] = &[
    case(
        "verbs '*' matches get",
        Rules,
        "verbs-star",
        ("get", "featureviews", ALICE, "driver_daily_stats"),
        true,
    ),
    case(
        "verbs '*' matches any verb, even one larder never uses",
        Rules,
        "verbs-star",
        ("deletecollection", "featureviews", ALICE, NO_NAME),
        true,
    ),
    case(
        "verbs '*' does not widen resources",
        Rules,
        "verbs-star",
        ("get", "entities", ALICE, "driver"),
        false,
    ),
    case(
        "an exact verb matches itself",
        Rules,
        "verbs-get",
        ("get", "featureviews", ALICE, "driver_daily_stats"),
        true,
    ),
    case(
        "an exact verb matches no other verb",
        Rules,
        "verbs-get",
        ("list", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "verbs are case-sensitive",
        Rules,
        "verbs-get",
        ("GET", "featureviews", ALICE, "driver_daily_stats"),
        false,
    ),
    case(
        "resources are case-sensitive",
        Rules,
        "verbs-get",
        ("get", "FeatureViews", ALICE, "driver_daily_stats"),
        false,
    ),
    case(
        "apiGroups '*' matches the core group",
        Rules,
        "groups-star",
        ("get", "featureviews", ALICE, "x"),
        true,
    )
    .api_group(""),
    case(
        "apiGroups '*' matches any named group",
        Rules,
        "groups-star",
        ("get", "featureviews", ALICE, "x"),
        true,
    )
    .api_group("example.com"),
    case(
        "apiGroup mismatch: features.kubeflow.org does not match kubeflow.org",
        Rules,
        "verbs-get",
        ("get", "featureviews", ALICE, "x"),
        false,
    )
    .api_group("kubeflow.org"),
    case(
        "apiGroup mismatch: features.kubeflow.org does not match the core group",
        Rules,
        "verbs-get",
        ("get", "featureviews", ALICE, "x"),
        false,
    )
    .api_group(""),
    case(
        "apiGroups [''] is the core group only",
        Rules,
        "groups-core",
        ("get", "featureviews", ALICE, "x"),
        false,
    ),
    case(
        "resources '*' matches any resource",
        Rules,
        "resources-star",
        ("get", "ondemandfeatureviews", ALICE, "x"),
        true,
    ),
    case(
        "resources '*' matches subresources too",
        Rules,
        "resources-star",
        ("get", "featureviews/materializations", ALICE, "x"),
        true,
    ),
    case(
        "a resource does not cover its subresources",
        Rules,
        "verbs-get",
        ("get", "featureviews/materializations", ALICE, "x"),
        false,
    ),
    case(
        "featureviews/materializations matches itself",
        Rules,
        "resources-sub",
        (
            "create",
            "featureviews/materializations",
            ALICE,
            "driver_daily_stats",
        ),
        true,
    ),
    case(
        "featureviews/materializations does not cover featureviews",
        Rules,
        "resources-sub",
        ("get", "featureviews", ALICE, "driver_daily_stats"),
        false,
    ),
    case(
        "featureviews/materializations is not the plain resource materializations",
        Rules,
        "resources-sub",
        ("get", "materializations", ALICE, "x"),
        false,
    ),
    case(
        "'*/materializations' matches that subresource of any resource",
        Rules,
        "resources-any-sub",
        (
            "get",
            "featureviews/materializations",
            ALICE,
            "driver_daily_stats",
        ),
        true,
    ),
    case(
        "'*/materializations' does not match a plain resource named materializations",
        Rules,
        "resources-any-sub",
        ("get", "materializations", ALICE, "x"),
        false,
    ),
    case(
        "'featureviews/*' is no wildcard: it matches no subresource",
        Rules,
        "resources-parent-star",
        ("get", "featureviews/materializations", ALICE, "x"),
        false,
    ),
    case(
        "resourceNames: get of a listed name",
        Rules,
        "names",
        ("get", "featureviews", ALICE, "driver_daily_stats"),
        true,
    ),
    case(
        "resourceNames: get of another name",
        Rules,
        "names",
        ("get", "featureviews", ALICE, "driver_locations"),
        false,
    ),
    case(
        "resourceNames: names are case-sensitive",
        Rules,
        "names",
        ("get", "featureviews", ALICE, "Driver_Daily_Stats"),
        false,
    ),
    case(
        "resourceNames: list names no object, so it is never allowed",
        Rules,
        "names",
        ("list", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "resourceNames: a watch of the whole collection names no object",
        Rules,
        "names",
        ("watch", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "resourceNames: a watch of one object (fieldSelector metadata.name) carries its name",
        Rules,
        "names",
        ("watch", "featureviews", ALICE, "driver_daily_stats"),
        true,
    ),
    case(
        "resourceNames: create carries no name (the authorizer sees none), even for a listed one",
        Rules,
        "names",
        ("create", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "resourceNames: deletecollection names no object",
        Rules,
        "names",
        ("deletecollection", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "resourceNames: update of a listed name",
        Rules,
        "names",
        ("update", "featureviews", ALICE, "driver_daily_stats"),
        true,
    ),
    case(
        "resourceNames: patch of a listed name",
        Rules,
        "names",
        ("patch", "featureviews", ALICE, "driver_daily_stats"),
        true,
    ),
    case(
        "resourceNames: delete of a listed name",
        Rules,
        "names",
        ("delete", "featureviews", ALICE, "driver_daily_stats"),
        true,
    ),
    case(
        "resourceNames: delete of another name",
        Rules,
        "names",
        ("delete", "featureviews", ALICE, "driver_locations"),
        false,
    ),
    case(
        "resourceNames with verbs '*': create is still not allowed",
        Rules,
        "names-any-verb",
        ("create", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "resourceNames with verbs '*': list is still not allowed",
        Rules,
        "names-any-verb",
        ("list", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "resourceNames with verbs '*': any verb on the listed name",
        Rules,
        "names-any-verb",
        ("delete", "featureviews", ALICE, "driver_daily_stats"),
        true,
    ),
    case(
        "resourceNames ['*'] is no wildcard: it names an object called '*'",
        Rules,
        "names-star",
        ("get", "featureviews", ALICE, "driver_daily_stats"),
        false,
    ),
    case(
        "two rules: the first allows get of featureviews",
        Rules,
        "two-rules",
        ("get", "featureviews", ALICE, "x"),
        true,
    ),
    case(
        "two rules: the second allows list of entities",
        Rules,
        "two-rules",
        ("list", "entities", ALICE, NO_NAME),
        true,
    ),
    case(
        "two rules are not mixed: the verb of one with the resource of the other",
        Rules,
        "two-rules",
        ("list", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "a rule with no verbs allows nothing",
        Rules,
        "no-verbs",
        ("get", "featureviews", ALICE, "x"),
        false,
    ),
    case(
        "a nonResourceURLs rule allows no resource request",
        Rules,
        "non-resource",
        ("get", "featureviews", ALICE, "x"),
        false,
    ),
];

// ---------------------------------------------------------------------------
// ClusterRole aggregation.

/// Source ClusterRoles carry labels and rules; aggregating ClusterRoles
/// (`agg-*`) select them. Each `agg-*` role is bound to the User of its name.
const AGGREGATION: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-team-features, labels: { team: features } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [get] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-team-other, labels: { team: other } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [entities], verbs: [get] }]
---
# A namespaced Role is never aggregated, whatever its labels.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: src-namespaced, namespace: kubeflow-alice, labels: { team: features } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [delete] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-match-labels }
aggregationRule:
  clusterRoleSelectors: [{ matchLabels: { team: features } }]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-tier-b, labels: { tier: b } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [datasources], verbs: [get] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-tier-c, labels: { tier: c } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureservices], verbs: [get] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-in }
aggregationRule:
  clusterRoleSelectors:
    - matchExpressions: [{ key: tier, operator: In, values: [a, b] }]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-notin-unlabelled, labels: { agg: notin } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [list] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-notin-c, labels: { agg: notin, grade: c } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [entities], verbs: [list] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-notin-d, labels: { agg: notin, grade: d } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [datasources], verbs: [list] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-notin }
aggregationRule:
  clusterRoleSelectors:
    - matchLabels: { agg: notin }
      matchExpressions: [{ key: grade, operator: NotIn, values: [c] }]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-exists-yes, labels: { agg: exists, opt-in: "" } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [watch] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-exists-no, labels: { agg: exists } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [entities], verbs: [watch] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-exists }
aggregationRule:
  clusterRoleSelectors:
    - matchLabels: { agg: exists }
      matchExpressions: [{ key: opt-in, operator: Exists }]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-dne-plain, labels: { agg: dne } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [create] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-dne-opted-out, labels: { agg: dne, opt-out: "true" } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [entities], verbs: [create] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-dne }
aggregationRule:
  clusterRoleSelectors:
    - matchLabels: { agg: dne }
      matchExpressions: [{ key: opt-out, operator: DoesNotExist }]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-or-x, labels: { or: x } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [update] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-or-y, labels: { or: y } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [entities], verbs: [update] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-or }
aggregationRule:
  clusterRoleSelectors: [{ matchLabels: { or: x } }, { matchLabels: { or: y } }]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-and-gold, labels: { and: "1", metal: gold } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [patch] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-and-silver, labels: { and: "1", metal: silver } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [entities], verbs: [patch] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-and }
aggregationRule:
  clusterRoleSelectors:
    - matchLabels: { and: "1" }
      matchExpressions: [{ key: metal, operator: In, values: [gold] }]
rules: []
---
# The aggregation controller overwrites an aggregating role's rules with the
# union of the selected roles' rules: rules written into it do not survive.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-own-rules }
aggregationRule:
  clusterRoleSelectors: [{ matchLabels: { own: src } }]
rules: [{ apiGroups: [features.kubeflow.org], resources: [datasources], verbs: [delete] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-own, labels: { own: src } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [delete] }]
---
# A chain, as Kubeflow's own roles are (view -> edit -> admin): the middle
# role's aggregated rules reach the top one.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-chain-top }
aggregationRule:
  clusterRoleSelectors: [{ matchLabels: { chain: top } }]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-chain-mid, labels: { chain: top } }
aggregationRule:
  clusterRoleSelectors: [{ matchLabels: { chain: mid } }]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: src-chain-leaf, labels: { chain: mid } }
rules: [{ apiGroups: [features.kubeflow.org], resources: [ondemandfeatureviews], verbs: [get] }]
---
# An empty selector is labels.Everything() in Kubernetes: it selects every
# ClusterRole (and is accepted by validation).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: agg-empty-selector }
aggregationRule:
  clusterRoleSelectors: [{}]
rules: []
"#;

fn aggregation_fixture() -> String {
    let mut yaml = AGGREGATION.to_owned();
    for agg in [
        "agg-match-labels",
        "agg-in",
        "agg-notin",
        "agg-exists",
        "agg-dne",
        "agg-or",
        "agg-and",
        "agg-own-rules",
        "agg-chain-top",
        "agg-chain-mid",
        "agg-empty-selector",
    ] {
        yaml.push_str(&format!(
            "---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{ name: {agg} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {agg} }}
subjects: [{{ apiGroup: rbac.authorization.k8s.io, kind: User, name: {agg} }}]
"
        ));
    }
    yaml
}

const AGGREGATION_CASES: &[Case] = &[
    case(
        "matchLabels: a ClusterRole with the label is aggregated",
        Aggregation,
        "agg-match-labels",
        ("get", "featureviews", ALICE, "x"),
        true,
    ),
    case(
        "matchLabels: a ClusterRole with another value of the label is not",
        Aggregation,
        "agg-match-labels",
        ("get", "entities", ALICE, "x"),
        false,
    ),
    case(
        "aggregation picks ClusterRoles only, never a namespaced Role with the label",
        Aggregation,
        "agg-match-labels",
        ("delete", "featureviews", ALICE, "x"),
        false,
    ),
    case(
        "matchExpressions In: a value among the listed ones is aggregated",
        Aggregation,
        "agg-in",
        ("get", "datasources", ALICE, "x"),
        true,
    ),
    case(
        "matchExpressions In: a value not listed is not",
        Aggregation,
        "agg-in",
        ("get", "featureservices", ALICE, "x"),
        false,
    ),
    case(
        "matchExpressions NotIn: a role without the key is aggregated",
        Aggregation,
        "agg-notin",
        ("list", "featureviews", ALICE, NO_NAME),
        true,
    ),
    case(
        "matchExpressions NotIn: a role with an unlisted value is aggregated",
        Aggregation,
        "agg-notin",
        ("list", "datasources", ALICE, NO_NAME),
        true,
    ),
    case(
        "matchExpressions NotIn: a role with a listed value is not",
        Aggregation,
        "agg-notin",
        ("list", "entities", ALICE, NO_NAME),
        false,
    ),
    case(
        "matchExpressions Exists: the key with an empty value is aggregated",
        Aggregation,
        "agg-exists",
        ("watch", "featureviews", ALICE, NO_NAME),
        true,
    ),
    case(
        "matchExpressions Exists: a role without the key is not",
        Aggregation,
        "agg-exists",
        ("watch", "entities", ALICE, NO_NAME),
        false,
    ),
    case(
        "matchExpressions DoesNotExist: a role without the key is aggregated",
        Aggregation,
        "agg-dne",
        ("create", "featureviews", ALICE, NO_NAME),
        true,
    ),
    case(
        "matchExpressions DoesNotExist: a role with the key is not",
        Aggregation,
        "agg-dne",
        ("create", "entities", ALICE, NO_NAME),
        false,
    ),
    case(
        "several selectors are ORed: the first one's role",
        Aggregation,
        "agg-or",
        ("update", "featureviews", ALICE, "x"),
        true,
    ),
    case(
        "several selectors are ORed: the second one's role",
        Aggregation,
        "agg-or",
        ("update", "entities", ALICE, "x"),
        true,
    ),
    case(
        "matchLabels and matchExpressions of one selector are ANDed: both hold",
        Aggregation,
        "agg-and",
        ("patch", "featureviews", ALICE, "x"),
        true,
    ),
    case(
        "matchLabels and matchExpressions of one selector are ANDed: only the labels hold",
        Aggregation,
        "agg-and",
        ("patch", "entities", ALICE, "x"),
        false,
    ),
    case(
        "an aggregating role gets the selected role's rules",
        Aggregation,
        "agg-own-rules",
        ("delete", "featureviews", ALICE, "x"),
        true,
    ),
    case(
        "an aggregating role's own rules are replaced by the aggregation controller",
        Aggregation,
        "agg-own-rules",
        ("delete", "datasources", ALICE, "x"),
        false,
    ),
    case(
        "chained aggregation: the middle role has the leaf's rules",
        Aggregation,
        "agg-chain-mid",
        ("get", "ondemandfeatureviews", ALICE, "x"),
        true,
    ),
    case(
        "chained aggregation: the top role has the leaf's rules through the middle one",
        Aggregation,
        "agg-chain-top",
        ("get", "ondemandfeatureviews", ALICE, "x"),
        true,
    ),
    case(
        "an empty selector {} selects every ClusterRole",
        Aggregation,
        "agg-empty-selector",
        ("get", "featureviews", ALICE, "x"),
        true,
    ),
];

// ---------------------------------------------------------------------------
// Bindings and subjects.

const BINDINGS: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: fv-reader }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [get, list] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: fv-creator }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [create] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: fs-reader }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureservices], verbs: [get] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: shadowed }
rules: [{ apiGroups: [features.kubeflow.org], resources: [datasources], verbs: [get] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: shadowed, namespace: kubeflow-alice }
rules: [{ apiGroups: [features.kubeflow.org], resources: [entities], verbs: [get] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: entity-reader, namespace: kubeflow-alice }
rules: [{ apiGroups: [features.kubeflow.org], resources: [entities], verbs: [get] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: only-in-bob, namespace: kubeflow-bob }
rules: [{ apiGroups: [features.kubeflow.org], resources: [datasources], verbs: [get] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-clusterrole, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fv-reader }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: rb-user }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-role, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: entity-reader }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: role-user }]
---
# roleRef of a RoleBinding names a Role of the binding's own namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-role-elsewhere, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: only-in-bob }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: misplaced-user }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-missing-role, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: no-such-role }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: missing-role-user }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-missing-clusterrole, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: no-such-clusterrole }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: missing-clusterrole-user }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-same-name, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: shadowed }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: shadow-user }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-service-accounts, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fv-reader }
subjects:
  - { kind: ServiceAccount, name: default-editor, namespace: kubeflow-bob }
  # No namespace: the binding's own namespace.
  - { kind: ServiceAccount, name: pipeline-runner }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-groups, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fv-reader }
subjects:
  - { apiGroup: rbac.authorization.k8s.io, kind: Group, name: data-scientists }
  - { apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:serviceaccounts:kubeflow-carol" }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-users, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fv-reader }
subjects:
  - { apiGroup: rbac.authorization.k8s.io, kind: User, name: bob@example.com }
  # A User subject is compared by name, so this one is a service account.
  - { apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:serviceaccount:kubeflow-dave:runner" }
  - { kind: Robot, name: r2 }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-user-star, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fv-creator }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: "*" }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: crb-user }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fv-reader }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: everywhere-user }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: crb-authenticated }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fs-reader }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated" }]
"#;

const BINDING_CASES: &[Case] = &[
    case(
        "RoleBinding to a ClusterRole: its rules in the binding's namespace",
        Bindings,
        "rb-user",
        ("get", "featureviews", ALICE, "x"),
        true,
    ),
    case(
        "RoleBinding to a ClusterRole: nothing in another namespace",
        Bindings,
        "rb-user",
        ("get", "featureviews", BOB, "x"),
        false,
    ),
    case(
        "RoleBinding never grants a cluster-scoped request (a list across namespaces)",
        Bindings,
        "rb-user",
        ("list", "featureviews", ANY_NS, NO_NAME),
        false,
    ),
    case(
        "ClusterRoleBinding: allowed in one namespace",
        Bindings,
        "everywhere-user",
        ("get", "featureviews", ALICE, "x"),
        true,
    ),
    case(
        "ClusterRoleBinding: allowed in any other namespace",
        Bindings,
        "everywhere-user",
        ("get", "featureviews", "kubeflow-zed", "x"),
        true,
    ),
    case(
        "ClusterRoleBinding: allowed for cluster-scoped requests",
        Bindings,
        "everywhere-user",
        ("list", "featureviews", ANY_NS, NO_NAME),
        true,
    ),
    case(
        "RoleBinding to a Role: its rules in the namespace",
        Bindings,
        "role-user",
        ("get", "entities", ALICE, "driver"),
        true,
    ),
    case(
        "RoleBinding to a Role: nothing in another namespace",
        Bindings,
        "role-user",
        ("get", "entities", BOB, "driver"),
        false,
    ),
    case(
        "RoleBinding to a Role that exists only in another namespace grants nothing here",
        Bindings,
        "misplaced-user",
        ("get", "datasources", ALICE, "x"),
        false,
    ),
    case(
        "RoleBinding to a Role that exists only in another namespace grants nothing there",
        Bindings,
        "misplaced-user",
        ("get", "datasources", BOB, "x"),
        false,
    ),
    case(
        "RoleBinding to a missing Role grants nothing",
        Bindings,
        "missing-role-user",
        ("get", "entities", ALICE, "x"),
        false,
    ),
    case(
        "RoleBinding to a missing ClusterRole grants nothing",
        Bindings,
        "missing-clusterrole-user",
        ("get", "featureviews", ALICE, "x"),
        false,
    ),
    case(
        "roleRef kind ClusterRole picks the ClusterRole, not a Role of the same name",
        Bindings,
        "shadow-user",
        ("get", "datasources", ALICE, "x"),
        true,
    ),
    case(
        "roleRef kind ClusterRole ignores a Role of the same name",
        Bindings,
        "shadow-user",
        ("get", "entities", ALICE, "x"),
        false,
    ),
    case(
        "ServiceAccount subject with a namespace: that account",
        Bindings,
        "system:serviceaccount:kubeflow-bob:default-editor",
        ("get", "featureviews", ALICE, "x"),
        true,
    )
    .groups(sa_groups!("kubeflow-bob")),
    case(
        "ServiceAccount subject with a namespace: same name in another namespace is not it",
        Bindings,
        "system:serviceaccount:kubeflow-zed:default-editor",
        ("get", "featureviews", ALICE, "x"),
        false,
    )
    .groups(sa_groups!("kubeflow-zed")),
    case(
        "ServiceAccount subject without a namespace in a RoleBinding: the binding's namespace",
        Bindings,
        "system:serviceaccount:kubeflow-alice:pipeline-runner",
        ("get", "featureviews", ALICE, "x"),
        true,
    )
    .groups(sa_groups!("kubeflow-alice")),
    case(
        "ServiceAccount subject without a namespace: not an account of another namespace",
        Bindings,
        "system:serviceaccount:kubeflow-bob:pipeline-runner",
        ("get", "featureviews", ALICE, "x"),
        false,
    )
    .groups(sa_groups!("kubeflow-bob")),
    case(
        "a service account name is exact: no prefix match",
        Bindings,
        "system:serviceaccount:kubeflow-bob:default-editor-2",
        ("get", "featureviews", ALICE, "x"),
        false,
    )
    .groups(sa_groups!("kubeflow-bob")),
    case(
        "Group subject: a member",
        Bindings,
        "erin",
        ("get", "featureviews", ALICE, "x"),
        true,
    )
    .groups(&["data-scientists", "system:authenticated"]),
    case(
        "Group subject: a group whose name only starts with it is another group",
        Bindings,
        "frank",
        ("get", "featureviews", ALICE, "x"),
        false,
    )
    .groups(&["data-scientists-alumni", "system:authenticated"]),
    case(
        "Group subject: a user named like the group is not a member",
        Bindings,
        "data-scientists",
        ("get", "featureviews", ALICE, "x"),
        false,
    ),
    case(
        "Group system:serviceaccounts:<ns>: every service account of that namespace",
        Bindings,
        "system:serviceaccount:kubeflow-carol:anything",
        ("get", "featureviews", ALICE, "x"),
        true,
    )
    .groups(sa_groups!("kubeflow-carol")),
    case(
        "Group system:serviceaccounts:<ns>: not those of another namespace",
        Bindings,
        "system:serviceaccount:kubeflow-bob:anything",
        ("get", "featureviews", ALICE, "x"),
        false,
    )
    .groups(sa_groups!("kubeflow-bob")),
    case(
        "Group system:authenticated: any signed-in user, anywhere (ClusterRoleBinding)",
        Bindings,
        "grace",
        ("get", "featureservices", "kubeflow-zed", "x"),
        true,
    )
    .groups(&["system:authenticated"]),
    case(
        "Group system:authenticated: any service account too",
        Bindings,
        "system:serviceaccount:kubeflow-zed:default",
        ("get", "featureservices", ANY_NS, "x"),
        true,
    )
    .groups(sa_groups!("kubeflow-zed")),
    case(
        "Group system:authenticated: not the anonymous user",
        Bindings,
        "system:anonymous",
        ("get", "featureservices", ALICE, "x"),
        false,
    )
    .groups(&["system:unauthenticated"]),
    case(
        "User subject: the exact name",
        Bindings,
        "bob@example.com",
        ("get", "featureviews", ALICE, "x"),
        true,
    ),
    case(
        "User subject: names are case-sensitive",
        Bindings,
        "Bob@example.com",
        ("get", "featureviews", ALICE, "x"),
        false,
    ),
    case(
        "User subject: a prefix of the name is another user",
        Bindings,
        "bob",
        ("get", "featureviews", ALICE, "x"),
        false,
    ),
    case(
        "User subject '*' is no wildcard",
        Bindings,
        "mallory",
        ("create", "featureviews", ALICE, NO_NAME),
        false,
    )
    .groups(&["system:authenticated"]),
    case(
        "User subject named like a service account matches that service account",
        Bindings,
        "system:serviceaccount:kubeflow-dave:runner",
        ("get", "featureviews", ALICE, "x"),
        true,
    )
    .groups(sa_groups!("kubeflow-dave")),
    case(
        "a subject of an unknown kind matches nobody",
        Bindings,
        "r2",
        ("get", "featureviews", ALICE, "x"),
        false,
    ),
];

/// Manifests whose meaning in Kubernetes differs from a literal reading.
/// Refusing to load them is as good as Kubernetes' answer (nothing granted).
const QUESTIONABLE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: fv-creator }
rules: [{ apiGroups: [features.kubeflow.org], resources: [featureviews], verbs: [create] }]
---
# A RoleBinding manifest without a namespace: kubectl creates it in its
# current namespace (`default` unless told). It is never cluster-wide.
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: rb-without-namespace }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fv-creator }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: unplaced-user }]
---
# A ServiceAccount subject without a namespace in a ClusterRoleBinding has
# no namespace to default to: Kubernetes matches nobody (and its validation
# refuses the object).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: crb-sa-without-namespace }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fv-creator }
subjects: [{ kind: ServiceAccount, name: orphan }]
"#;

const QUESTIONABLE_CASES: &[Case] = &[
    case(
        "a RoleBinding without a namespace never grants cluster-scoped requests",
        Questionable,
        "unplaced-user",
        ("create", "featureviews", ANY_NS, NO_NAME),
        false,
    ),
    case(
        "a RoleBinding without a namespace does not grant in every namespace",
        Questionable,
        "unplaced-user",
        ("create", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "a ServiceAccount subject without a namespace in a ClusterRoleBinding matches nobody",
        Questionable,
        "system:serviceaccount::orphan",
        ("create", "featureviews", ALICE, NO_NAME),
        false,
    ),
    case(
        "a ServiceAccount subject without a namespace in a ClusterRoleBinding: not `default` either",
        Questionable,
        "system:serviceaccount:default:orphan",
        ("create", "featureviews", ALICE, NO_NAME),
        false,
    )
    .groups(sa_groups!("default")),
];

// ---------------------------------------------------------------------------
// The story: deploy/rbac/ as shipped, Kubeflow's roles, and the bindings
// Kubeflow's profile controller makes for the profiles of Alice and Bob.

/// What Kubeflow's profile controller creates in each profile namespace:
/// the owner is bound to kubeflow-admin, the notebooks' service account
/// default-editor to kubeflow-edit, default-viewer to kubeflow-view.
fn profile_bindings(namespace: &str, owner: &str) -> String {
    format!(
        "---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: namespaceAdmin, namespace: {namespace} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeflow-admin }}
subjects: [{{ apiGroup: rbac.authorization.k8s.io, kind: User, name: '{owner}' }}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: default-editor, namespace: {namespace} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeflow-edit }}
subjects: [{{ kind: ServiceAccount, name: default-editor, namespace: {namespace} }}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: default-viewer, namespace: {namespace} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeflow-view }}
subjects: [{{ kind: ServiceAccount, name: default-viewer, namespace: {namespace} }}]
"
    )
}

/// Every YAML file of `dir` (not recursive), in name order.
fn yaml_files(dir: &Path) -> Vec<String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

fn story_fixture() -> String {
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac");
    let mut docs = yaml_files(&rbac);
    docs.extend(yaml_files(&rbac.join("testdata")));
    docs.push(profile_bindings(ALICE, "alice@example.com"));
    docs.push(profile_bindings(BOB, "bob@example.com"));
    docs.iter()
        .map(|d| format!("---\n{d}\n"))
        .collect::<String>()
}

const ALICE_EDITOR: &str = "system:serviceaccount:kubeflow-alice:default-editor";
const ALICE_VIEWER: &str = "system:serviceaccount:kubeflow-alice:default-viewer";
const BOB_EDITOR: &str = "system:serviceaccount:kubeflow-bob:default-editor";
const FEATURE_SERVER: &str = "system:serviceaccount:kubeflow:larder-feature-server";
const REGISTRY: &str = "system:serviceaccount:kubeflow:larder-registry";

const STORY_CASES: &[Case] = &[
    case(
        "Alice, owner (kubeflow-admin <- kubeflow-feature-edit), creates a feature view",
        Story,
        "alice@example.com",
        ("create", "featureviews", ALICE, NO_NAME),
        true,
    )
    .groups(&["system:authenticated"]),
    case(
        "Alice deletes an entity in her namespace",
        Story,
        "alice@example.com",
        ("delete", "entities", ALICE, "driver"),
        true,
    )
    .groups(&["system:authenticated"]),
    case(
        "Alice records a materialization",
        Story,
        "alice@example.com",
        ("create", "materializations", ALICE, NO_NAME),
        true,
    )
    .groups(&["system:authenticated"]),
    case(
        "Alice may not read Bob's namespace",
        Story,
        "alice@example.com",
        ("get", "featureviews", BOB, "x"),
        false,
    )
    .groups(&["system:authenticated"]),
    case(
        "Alice may not list across namespaces",
        Story,
        "alice@example.com",
        ("list", "featureviews", ANY_NS, NO_NAME),
        false,
    )
    .groups(&["system:authenticated"]),
    case(
        "Alice's notebooks (default-editor, kubeflow-edit <- kubeflow-feature-edit) create feature views",
        Story,
        ALICE_EDITOR,
        ("create", "featureviews", ALICE, NO_NAME),
        true,
    )
    .groups(sa_groups!("kubeflow-alice")),
    case(
        "Alice's notebooks update a feature service",
        Story,
        ALICE_EDITOR,
        ("update", "featureservices", ALICE, "driver_activity"),
        true,
    )
    .groups(sa_groups!("kubeflow-alice")),
    case(
        "default-viewer (kubeflow-view <- kubeflow-feature-view) lists feature views",
        Story,
        ALICE_VIEWER,
        ("list", "featureviews", ALICE, NO_NAME),
        true,
    )
    .groups(sa_groups!("kubeflow-alice")),
    case(
        "default-viewer reads materializations",
        Story,
        ALICE_VIEWER,
        ("get", "materializations", ALICE, "driver_daily_stats"),
        true,
    )
    .groups(sa_groups!("kubeflow-alice")),
    case(
        "default-viewer may not create feature views",
        Story,
        ALICE_VIEWER,
        ("create", "featureviews", ALICE, NO_NAME),
        false,
    )
    .groups(sa_groups!("kubeflow-alice")),
    case(
        "default-viewer may not record materializations",
        Story,
        ALICE_VIEWER,
        ("create", "materializations", ALICE, NO_NAME),
        false,
    )
    .groups(sa_groups!("kubeflow-alice")),
    case(
        "Bob gets the shared driver_daily_stats",
        Story,
        "bob@example.com",
        ("get", "featureviews", ALICE, "driver_daily_stats"),
        true,
    )
    .groups(&["system:authenticated"]),
    case(
        "Bob may not get driver_locations, which was not shared",
        Story,
        "bob@example.com",
        ("get", "featureviews", ALICE, "driver_locations"),
        false,
    )
    .groups(&["system:authenticated"]),
    case(
        "Bob may not list Alice's feature views (larder falls back to per-object get)",
        Story,
        "bob@example.com",
        ("list", "featureviews", ALICE, NO_NAME),
        false,
    )
    .groups(&["system:authenticated"]),
    case(
        "Bob may not update the shared view",
        Story,
        "bob@example.com",
        ("update", "featureviews", ALICE, "driver_daily_stats"),
        false,
    )
    .groups(&["system:authenticated"]),
    case(
        "Bob may not get Alice's entities",
        Story,
        "bob@example.com",
        ("get", "entities", ALICE, "driver"),
        false,
    )
    .groups(&["system:authenticated"]),
    case(
        "the share is in kubeflow-alice only",
        Story,
        "bob@example.com",
        ("get", "featureviews", "kubeflow-charlie", "driver_daily_stats"),
        false,
    )
    .groups(&["system:authenticated"]),
    case(
        "Bob's notebooks (default-editor of kubeflow-bob) get the shared view",
        Story,
        BOB_EDITOR,
        ("get", "featureviews", ALICE, "driver_daily_stats"),
        true,
    )
    .groups(sa_groups!("kubeflow-bob")),
    case(
        "Bob's notebooks may not get driver_locations",
        Story,
        BOB_EDITOR,
        ("get", "featureviews", ALICE, "driver_locations"),
        false,
    )
    .groups(sa_groups!("kubeflow-bob")),
    case(
        "Bob's notebooks edit Bob's own namespace",
        Story,
        BOB_EDITOR,
        ("create", "featureviews", BOB, NO_NAME),
        true,
    )
    .groups(sa_groups!("kubeflow-bob")),
    case(
        "Charlie, with no profile and no share, gets nothing",
        Story,
        "charlie@example.com",
        ("get", "featureviews", ALICE, "driver_daily_stats"),
        false,
    )
    .groups(&["system:authenticated"]),
    case(
        "the feature server lists every namespace's feature views",
        Story,
        FEATURE_SERVER,
        ("list", "featureviews", ANY_NS, NO_NAME),
        true,
    )
    .groups(sa_groups!("kubeflow")),
    case(
        "the feature server watches entities everywhere",
        Story,
        FEATURE_SERVER,
        ("watch", "entities", ANY_NS, NO_NAME),
        true,
    )
    .groups(sa_groups!("kubeflow")),
    case(
        "the feature server gets one of Alice's feature views",
        Story,
        FEATURE_SERVER,
        ("get", "featureviews", ALICE, "driver_locations"),
        true,
    )
    .groups(sa_groups!("kubeflow")),
    case(
        "the feature server may not change anything",
        Story,
        FEATURE_SERVER,
        ("delete", "featureviews", ALICE, "driver_locations"),
        false,
    )
    .groups(sa_groups!("kubeflow")),
    case(
        "the registry's own account has no say over feature objects",
        Story,
        REGISTRY,
        ("get", "featureviews", ALICE, "driver_daily_stats"),
        false,
    )
    .groups(sa_groups!("kubeflow")),
    case(
        "a binding to a ClusterRole that is not loaded (system:auth-delegator is built into Kubernetes) grants nothing here",
        Story,
        REGISTRY,
        ("create", "tokenreviews", ANY_NS, NO_NAME),
        false,
    )
    .api_group("authentication.k8s.io")
    .groups(sa_groups!("kubeflow")),
];

// ---------------------------------------------------------------------------

/// Asks every case of `cases` and fails listing each answer that differs
/// from Kubernetes'.
fn check(fixture: Fixture, yaml: &str, cases: &[Case]) {
    let policy = match Policy::from_yaml(yaml) {
        Ok(policy) => Some(policy),
        // Refusing such manifests is a correct answer: nothing is granted.
        Err(_) if fixture == Questionable => None,
        Err(e) => panic!("{fixture:?} fixture does not load: {e}"),
    };
    let mut wrong = Vec::new();
    let mut asked = 0;
    for c in cases.iter().filter(|c| c.fixture == fixture) {
        asked += 1;
        let user = UserInfo {
            name: c.user.to_owned(),
            groups: c.groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        let request = Request {
            verb: c.verb,
            api_group: c.api_group,
            resource: c.resource,
            namespace: c.namespace,
            name: c.name,
        };
        let got = policy.as_ref().is_some_and(|p| p.allows(&user, &request));
        if got != c.allowed {
            let say = |allowed: bool| if allowed { "allowed" } else { "denied" };
            wrong.push(format!(
                "  {}\n    {} {}/{} ns={:?} name={:?} as {:?}: Kubernetes {}, evaluator {}",
                c.what,
                c.verb,
                if c.api_group.is_empty() {
                    "core"
                } else {
                    c.api_group
                },
                c.resource,
                c.namespace,
                c.name,
                c.user,
                say(c.allowed),
                say(got),
            ));
        }
    }
    assert!(asked > 0, "no {fixture:?} cases");
    assert!(
        wrong.is_empty(),
        "{} of {asked} {fixture:?} cases differ from Kubernetes:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn rule_matching() {
    check(Rules, &rules_fixture(), RULE_CASES);
}

#[test]
fn cluster_role_aggregation() {
    check(Aggregation, &aggregation_fixture(), AGGREGATION_CASES);
}

#[test]
fn bindings_and_subjects() {
    check(Bindings, BINDINGS, BINDING_CASES);
}

#[test]
fn manifests_kubernetes_reads_differently() {
    check(Questionable, QUESTIONABLE, QUESTIONABLE_CASES);
}

#[test]
fn story_of_deploy_rbac() {
    check(Story, &story_fixture(), STORY_CASES);
}

/// Every case belongs to the table of its fixture, so none is skipped.
#[test]
fn every_case_is_asked() {
    for (cases, fixture) in [
        (RULE_CASES, Rules),
        (AGGREGATION_CASES, Aggregation),
        (BINDING_CASES, Bindings),
        (QUESTIONABLE_CASES, Questionable),
        (STORY_CASES, Story),
    ] {
        for c in cases {
            assert_eq!(c.fixture, fixture, "{}: in the wrong table", c.what);
        }
    }
}
