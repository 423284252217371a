//! Parsing a request: which kind, namespace, name and subresource a path names, and the query
//! options Kubernetes clients send.

use std::collections::HashMap;

use crate::error::{ApiError, ApiResult};
use crate::kinds::{self, Kind};

/// What a resource path points at.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: &'static Kind,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// A parsed API path.
#[derive(Debug, Clone)]
pub enum Route {
    /// `/api/v1` or `/apis/G/V`: the resource list of a group version.
    ResourceList { group: String, version: String },
    Resource(Target),
}

/// Parse `/api/v1/...` or `/apis/<group>/<version>/...`.
pub fn parse_path(path: &str) -> ApiResult<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::NoRoute),
    };
    if kinds::group_versions().iter().all(|gv| *gv != (group, version)) {
        return Err(ApiError::NoRoute);
    }
    if rest.is_empty() {
        return Ok(Route::ResourceList { group: group.into(), version: version.into() });
    }
    let find = |plural: &str| kinds::find(group, version, plural).ok_or(ApiError::NoRoute);
    // namespaces/<ns>/<plural>/... names a namespaced resource; namespaces/<name>[/status|finalize]
    // names the Namespace object itself.
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let kind = find(plural)?;
            if !kind.namespaced {
                return Err(ApiError::NoRoute);
            }
            named(kind, Some(ns), tail)?
        }
        [plural, tail @ ..] => {
            let kind = find(plural)?;
            if kind.namespaced && !tail.is_empty() {
                return Err(ApiError::NoRoute);
            }
            named(kind, None, tail)?
        }
        [] => unreachable_route()?,
    };
    Ok(Route::Resource(target))
}

fn unreachable_route() -> ApiResult<Target> {
    Err(ApiError::NoRoute)
}

fn named(kind: &'static Kind, ns: Option<&str>, tail: &[&str]) -> ApiResult<Target> {
    let (name, sub) = match tail {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] => (Some(*name), Some(*sub)),
        _ => return Err(ApiError::NoRoute),
    };
    if let Some(sub) = sub {
        let ok = (sub == "status" && kind.status_subresource)
            || (sub == "scale" && kind.scale)
            || (sub == "finalize" && kind.kind == "Namespace");
        if !ok {
            return Err(ApiError::NoRoute);
        }
    }
    Ok(Target {
        kind,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    })
}

/// Query parameters, decoded.
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let map = raw
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1"))
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("invalid value for {key}: {v:?} is not an integer"))),
        }
    }

    pub fn dry_run(&self) -> bool {
        self.0.get("dryRun").is_some_and(|v| v == "All")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(p: &str) -> Target {
        match parse_path(p).unwrap() {
            Route::Resource(t) => t,
            other => panic!("{p} parsed as {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let t = target("/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm1");
        assert_eq!(t.kind.kind, "VirtualMachine");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("vm1"));
        let t = target("/api/v1/namespaces/default");
        assert_eq!(t.kind.kind, "Namespace");
        assert_eq!(t.name.as_deref(), Some("default"));
        let t = target("/api/v1/namespaces/x/status");
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = target("/api/v1/pods");
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = target("/api/v1/nodes/n1/status");
        assert_eq!(t.subresource.as_deref(), Some("status"));
        assert!(matches!(parse_path("/api/v1/namespaces/x/nodes"), Err(ApiError::NoRoute)));
        assert!(matches!(parse_path("/api/v1/pods/x"), Err(ApiError::NoRoute)));
        assert!(matches!(parse_path("/apis/kubevirt.io/v1/namespaces/d/virtualmachineinstances/x/status"), Err(ApiError::NoRoute)));
        assert!(matches!(parse_path("/apis/nope/v1"), Err(ApiError::NoRoute)));
        assert!(matches!(parse_path("/apis/kubevirt.io/v1"), Ok(Route::ResourceList { .. })));
    }
}
