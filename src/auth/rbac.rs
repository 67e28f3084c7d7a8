//! An in-process evaluator of Kubernetes RBAC objects with Kubernetes'
//! semantics: Role, ClusterRole (with aggregation), RoleBinding and
//! ClusterRoleBinding; subjects User, Group and ServiceAccount; rules of
//! apiGroups, resources, resourceNames and verbs with `*`.
//!
//! What is allowed is the union of every rule that reaches the user: rules
//! of ClusterRoles bound by ClusterRoleBindings apply everywhere; rules
//! reached through a RoleBinding apply in the binding's namespace only.
//! Nothing is ever denied explicitly (RBAC has no deny rules): no matching
//! rule means no.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Who is asking: a verified user name and its groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// What is asked, in Kubernetes' authorization attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub verb: &'a str,
    pub api_group: &'a str,
    pub resource: &'a str,
    /// Empty for cluster-scoped requests.
    pub namespace: &'a str,
    /// Empty for list, create and other requests that name no object.
    pub name: &'a str,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// A rule's resource against a requested one: `*` is every resource and
/// subresource, `*/sub` is subresource `sub` of every resource.
fn resource_matches(rule: &str, requested: &str) -> bool {
    if rule == "*" || rule == requested {
        return true;
    }
    match (rule.strip_prefix("*/"), requested.split_once('/')) {
        (Some(sub), Some((_, requested_sub))) => sub == requested_sub,
        _ => false,
    }
}

impl PolicyRule {
    /// Kubernetes' rule match. A rule with resourceNames only matches
    /// requests that name an object among them, so it never allows create
    /// or list (those requests carry no name).
    pub fn allows(&self, r: &Request<'_>) -> bool {
        has(&self.verbs, r.verb)
            && has(&self.api_groups, r.api_group)
            && self
                .resources
                .iter()
                .any(|x| resource_matches(x, r.resource))
            && (self.resource_names.is_empty()
                || (!r.name.is_empty() && self.resource_names.iter().any(|n| n == r.name)))
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LabelSelectorRequirement {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LabelSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Kubernetes selector semantics: every requirement holds, so an empty
    /// selector matches every object.
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AggregationRule {
    #[serde(default)]
    cluster_role_selectors: Vec<LabelSelector>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subject {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    rules: Vec<PolicyRule>,
    #[serde(default)]
    aggregation_rule: Option<AggregationRule>,
    #[serde(default)]
    subjects: Vec<Subject>,
    role_ref: Option<RoleRef>,
}

/// A manifest the evaluator cannot use, naming it.
#[derive(Debug, thiserror::Error)]
#[error("RBAC manifest {what}: {reason}")]
pub struct RbacError {
    pub what: String,
    pub reason: String,
}

struct Binding {
    /// Empty for a ClusterRoleBinding.
    namespace: String,
    subjects: Vec<Subject>,
    role_ref: RoleRef,
}

/// A set of RBAC objects, ready to answer questions.
#[derive(Default)]
pub struct Policy {
    /// ClusterRole name -> its rules, aggregation resolved.
    cluster_roles: BTreeMap<String, Vec<PolicyRule>>,
    /// (namespace, Role name) -> rules.
    roles: BTreeMap<(String, String), Vec<PolicyRule>>,
    bindings: Vec<Binding>,
}

impl Policy {
    /// Reads RBAC manifests (YAML, several documents); kinds other than the
    /// four RBAC kinds are ignored.
    pub fn from_yaml(text: &str) -> Result<Policy, RbacError> {
        let mut objects = Vec::new();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc).map_err(|e| RbacError {
                what: format!("document {}", i + 1),
                reason: e.to_string(),
            })?;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_owned();
            if !matches!(
                kind.as_str(),
                "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
            ) {
                continue;
            }
            let object: Object = serde_yaml::from_value(value).map_err(|e| RbacError {
                what: format!("document {} ({kind})", i + 1),
                reason: e.to_string(),
            })?;
            objects.push(object);
        }
        Self::from_objects(objects)
    }

    fn from_objects(objects: Vec<Object>) -> Result<Policy, RbacError> {
        let mut policy = Policy::default();
        let cluster_roles: Vec<&Object> =
            objects.iter().filter(|o| o.kind == "ClusterRole").collect();
        // Aggregation as Kubernetes' controller does it: an aggregating
        // ClusterRole's rules are replaced by the union of the rules of the
        // ClusterRoles its selectors pick, which may aggregate in turn; so
        // iterate to a fixed point (at most one round per role).
        let mut resolved: BTreeMap<&str, Vec<PolicyRule>> = cluster_roles
            .iter()
            .map(|r| {
                let own = if r.aggregation_rule.is_some() {
                    Vec::new()
                } else {
                    r.rules.clone()
                };
                (r.metadata.name.as_str(), own)
            })
            .collect();
        for _ in 0..=cluster_roles.len() {
            let mut changed = false;
            for role in &cluster_roles {
                let Some(aggregation) = &role.aggregation_rule else {
                    continue;
                };
                let mut rules: Vec<PolicyRule> = Vec::new();
                for other in &cluster_roles {
                    if other.metadata.name != role.metadata.name
                        && aggregation
                            .cluster_role_selectors
                            .iter()
                            .any(|s| s.matches(&other.metadata.labels))
                    {
                        for rule in &resolved[other.metadata.name.as_str()] {
                            if !rules.contains(rule) {
                                rules.push(rule.clone());
                            }
                        }
                    }
                }
                let current = resolved
                    .get_mut(role.metadata.name.as_str())
                    .expect("every ClusterRole is resolved");
                if *current != rules {
                    *current = rules;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for (name, rules) in resolved {
            policy.cluster_roles.insert(name.to_owned(), rules);
        }
        for o in &objects {
            match o.kind.as_str() {
                "Role" => {
                    if o.metadata.namespace.is_empty() {
                        return Err(RbacError {
                            what: format!("Role {}", o.metadata.name),
                            reason:
                                "metadata.namespace is missing: a Role belongs to one namespace"
                                    .into(),
                        });
                    }
                    policy.roles.insert(
                        (o.metadata.namespace.clone(), o.metadata.name.clone()),
                        o.rules.clone(),
                    );
                }
                "RoleBinding" | "ClusterRoleBinding" => {
                    let what = format!("{} {}/{}", o.kind, o.metadata.namespace, o.metadata.name);
                    let role_ref = o.role_ref.clone().ok_or_else(|| RbacError {
                        what: what.clone(),
                        reason: "roleRef is missing".into(),
                    })?;
                    if o.kind == "RoleBinding" && o.metadata.namespace.is_empty() {
                        return Err(RbacError {
                            what,
                            reason: "metadata.namespace is missing: a RoleBinding grants in one namespace"
                                .into(),
                        });
                    }
                    if o.kind == "ClusterRoleBinding"
                        && let Some(s) = o
                            .subjects
                            .iter()
                            .find(|s| s.kind == "ServiceAccount" && s.namespace.is_empty())
                    {
                        return Err(RbacError {
                            what,
                            reason: format!(
                                "subject ServiceAccount {:?} needs a namespace in a ClusterRoleBinding",
                                s.name
                            ),
                        });
                    }
                    if o.kind == "ClusterRoleBinding" && role_ref.kind != "ClusterRole" {
                        return Err(RbacError {
                            what,
                            reason: "a ClusterRoleBinding can only refer to a ClusterRole".into(),
                        });
                    }
                    policy.bindings.push(Binding {
                        namespace: if o.kind == "RoleBinding" {
                            o.metadata.namespace.clone()
                        } else {
                            String::new()
                        },
                        subjects: o.subjects.clone(),
                        role_ref,
                    });
                }
                _ => {}
            }
        }
        Ok(policy)
    }

    fn subject_is(binding: &Binding, s: &Subject, user: &UserInfo) -> bool {
        match s.kind.as_str() {
            "User" => s.name == user.name,
            "Group" => user.groups.contains(&s.name),
            "ServiceAccount" => {
                let ns = if s.namespace.is_empty() {
                    &binding.namespace
                } else {
                    &s.namespace
                };
                user.name == format!("system:serviceaccount:{ns}:{}", s.name)
            }
            _ => false,
        }
    }

    /// Whether `user` may do `request`.
    pub fn allows(&self, user: &UserInfo, request: &Request<'_>) -> bool {
        self.bindings.iter().any(|b| {
            // A RoleBinding grants only inside its own namespace.
            if !b.namespace.is_empty() && b.namespace != request.namespace {
                return false;
            }
            if !b.subjects.iter().any(|s| Self::subject_is(b, s, user)) {
                return false;
            }
            let rules = match b.role_ref.kind.as_str() {
                "ClusterRole" => self.cluster_roles.get(&b.role_ref.name),
                "Role" => self
                    .roles
                    .get(&(b.namespace.clone(), b.role_ref.name.clone())),
                _ => None,
            };
            rules.is_some_and(|rules| rules.iter().any(|r| r.allows(request)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's roles: feature-edit/view ClusterRoles aggregated into
    /// Kubeflow's edit/view, owners bound in their namespaces, and Alice
    /// sharing one feature view with Bob by name.
    const STORY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kubeflow-feature-view
  labels: { rbac.authorization.kubeflow.org/aggregate-to-kubeflow-view: "true" }
rules:
  - apiGroups: [features.kubeflow.org]
    resources: [entities, datasources, featureviews, ondemandfeatureviews, featureservices]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kubeflow-feature-edit
  labels: { rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit: "true" }
rules:
  - apiGroups: [features.kubeflow.org]
    resources: ["*"]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: kubeflow-edit }
aggregationRule:
  clusterRoleSelectors:
    - matchLabels: { rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit: "true" }
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: kubeflow-view }
aggregationRule:
  clusterRoleSelectors:
    - matchExpressions:
        - { key: rbac.authorization.kubeflow.org/aggregate-to-kubeflow-view, operator: In, values: ["true"] }
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: alice-edit, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeflow-edit }
subjects:
  - { kind: ServiceAccount, name: default-editor }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: share-with-bob, namespace: kubeflow-alice }
rules:
  - apiGroups: [features.kubeflow.org]
    resources: [featureviews]
    resourceNames: [driver_daily_stats_fv]
    verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: share-with-bob, namespace: kubeflow-alice }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: share-with-bob }
subjects:
  - { kind: ServiceAccount, name: default-editor, namespace: kubeflow-bob }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: auditors }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeflow-view }
subjects:
  - { kind: Group, name: auditors }
"#;

    fn sa(ns: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{ns}:default-editor"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        }
    }

    fn req<'a>(verb: &'a str, resource: &'a str, ns: &'a str, name: &'a str) -> Request<'a> {
        Request {
            verb,
            api_group: "features.kubeflow.org",
            resource,
            namespace: ns,
            name,
        }
    }

    #[test]
    fn owners_edit_their_namespace_only() {
        let p = Policy::from_yaml(STORY).unwrap();
        let alice = sa("kubeflow-alice");
        assert!(p.allows(&alice, &req("create", "featureviews", "kubeflow-alice", "")));
        assert!(p.allows(
            &alice,
            &req("delete", "entities", "kubeflow-alice", "driver")
        ));
        assert!(!p.allows(&alice, &req("get", "featureviews", "kubeflow-bob", "x")));
        // Another API group is not covered.
        let mut other = req("get", "pods", "kubeflow-alice", "x");
        other.api_group = "";
        assert!(!p.allows(&alice, &other));
    }

    #[test]
    fn sharing_by_name_is_exactly_what_was_shared() {
        let p = Policy::from_yaml(STORY).unwrap();
        let bob = sa("kubeflow-bob");
        assert!(p.allows(
            &bob,
            &req(
                "get",
                "featureviews",
                "kubeflow-alice",
                "driver_daily_stats_fv"
            )
        ));
        assert!(!p.allows(
            &bob,
            &req(
                "get",
                "featureviews",
                "kubeflow-alice",
                "driver_locations_fv"
            )
        ));
        assert!(!p.allows(
            &bob,
            &req(
                "update",
                "featureviews",
                "kubeflow-alice",
                "driver_daily_stats_fv"
            )
        ));
        // resourceNames never allow a request that names nothing.
        assert!(!p.allows(&bob, &req("list", "featureviews", "kubeflow-alice", "")));
        assert!(!p.allows(&bob, &req("create", "featureviews", "kubeflow-alice", "")));
        assert!(!p.allows(&bob, &req("get", "entities", "kubeflow-alice", "driver")));
    }

    #[test]
    fn aggregation_and_cluster_bindings_reach_everywhere() {
        let p = Policy::from_yaml(STORY).unwrap();
        let auditor = UserInfo {
            name: "carol".into(),
            groups: vec!["auditors".into()],
        };
        assert!(p.allows(&auditor, &req("list", "featureviews", "kubeflow-bob", "")));
        assert!(p.allows(
            &auditor,
            &req("get", "entities", "kubeflow-alice", "driver")
        ));
        assert!(!p.allows(
            &auditor,
            &req("delete", "entities", "kubeflow-alice", "driver")
        ));
        let stranger = UserInfo {
            name: "mallory".into(),
            groups: vec!["system:authenticated".into()],
        };
        assert!(!p.allows(
            &stranger,
            &req(
                "get",
                "featureviews",
                "kubeflow-alice",
                "driver_daily_stats_fv"
            )
        ));
    }

    #[test]
    fn bad_manifests_are_named() {
        let err = Policy::from_yaml(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: { name: x }\nroleRef: { kind: Role, name: r }\nsubjects: []\n",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("ClusterRoleBinding /x"), "{err}");
        let err = Policy::from_yaml("apiVersion: v1\nkind: RoleBinding\nmetadata: { name: y, namespace: n }\nsubjects: []\n")
            .err()
            .unwrap();
        assert!(err.to_string().contains("roleRef"), "{err}");
    }
}
