//! Feature references: `[namespace/]view:feature`.

use std::fmt;

/// A reference to one feature of a feature view (or on-demand view),
/// optionally qualified with the namespace that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeatureRef {
    pub namespace: Option<String>,
    pub view: String,
    pub feature: String,
}

/// Why a feature reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed feature reference {reference:?}: {reason}")]
pub struct MalformedRef {
    pub reference: String,
    pub reason: &'static str,
}

/// The parts of a feature reference, borrowed from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefParts<'a> {
    pub namespace: Option<&'a str>,
    pub view: &'a str,
    pub feature: &'a str,
}

impl FeatureRef {
    pub fn parse(reference: &str) -> Result<FeatureRef, MalformedRef> {
        let parts = Self::split(reference)?;
        Ok(FeatureRef {
            namespace: parts.namespace.map(str::to_owned),
            view: parts.view.to_owned(),
            feature: parts.feature.to_owned(),
        })
    }

    /// Borrows the parts of this reference.
    pub fn parts(&self) -> RefParts<'_> {
        RefParts {
            namespace: self.namespace.as_deref(),
            view: &self.view,
            feature: &self.feature,
        }
    }

    /// Splits `[namespace/]view:feature` without copying it.
    pub fn split(reference: &str) -> Result<RefParts<'_>, MalformedRef> {
        let bad = |reason| MalformedRef {
            reference: reference.to_owned(),
            reason,
        };
        let (namespace, rest) = match reference.split_once('/') {
            Some((ns, rest)) => {
                if ns.is_empty() {
                    return Err(bad("the namespace before '/' is empty"));
                }
                (Some(ns), rest)
            }
            None => (None, reference),
        };
        let Some((view, feature)) = rest.split_once(':') else {
            return Err(bad("expected `view:feature` or `namespace/view:feature`"));
        };
        if view.is_empty() {
            return Err(bad("the feature view name is empty"));
        }
        if feature.is_empty() {
            return Err(bad("the feature name is empty"));
        }
        if feature.contains(':') || feature.contains('/') || view.contains('/') {
            return Err(bad("more than one ':' or '/'"));
        }
        Ok(RefParts {
            namespace,
            view,
            feature,
        })
    }
}

impl fmt::Display for RefParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ns) = self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{}:{}", self.view, self.feature)
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ns) = &self.namespace {
            write!(f, "{ns}/")?;
        }
        write!(f, "{}:{}", self.view, self.feature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qualified_and_unqualified() {
        let r = FeatureRef::parse("kubeflow-alice/driver_daily_stats_fv:profit").unwrap();
        assert_eq!(r.namespace.as_deref(), Some("kubeflow-alice"));
        assert_eq!(r.view, "driver_daily_stats_fv");
        assert_eq!(r.feature, "profit");
        assert_eq!(r.to_string(), "kubeflow-alice/driver_daily_stats_fv:profit");
        let r = FeatureRef::parse("v:f").unwrap();
        assert_eq!(r.namespace, None);
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "v", ":f", "v:", "/v:f", "a/b/v:f", "v:f:g"] {
            let err = FeatureRef::parse(bad).unwrap_err();
            assert_eq!(err.reference, bad);
        }
    }
}
