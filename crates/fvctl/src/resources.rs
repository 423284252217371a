//! The resource types fvctl knows by name, and how a word typed on the command line (`vm`, `vms`,
//! `virtualmachine`, `virtualmachines.kubevirt.io`, `vm/testvm`) or a manifest's
//! `apiVersion`/`kind` resolves to one. Kinds not in this table are found through the server's
//! discovery (see [`crate::api::Rest::discover`]).

use crate::errors::{Error, Result};

/// One resource type: where it lives in the API and what it is called.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group, empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
}

impl ResourceKind {
    /// `apiVersion` as written in manifests.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `virtualmachine.kubevirt.io` (or `pod` for the core group): the prefix of `-o name`.
    pub fn qualified_singular(&self) -> String {
        if self.group.is_empty() {
            self.singular.to_string()
        } else {
            format!("{}.{}", self.singular, self.group)
        }
    }

    /// What a message calls one object of this kind: `virtualmachine`, `pod`.
    pub fn singular_display(&self) -> &'static str {
        self.singular
    }

    /// The word to list these with: `vms`, `vmis`, `nodes`.
    pub fn list_word(&self) -> String {
        match self.short_names.first() {
            Some(short) if self.group == ferrovirt_api::GROUP && short.ends_with('s') => {
                short.to_string()
            }
            Some(short) if self.group == ferrovirt_api::GROUP => format!("{short}s"),
            _ => self.plural.to_string(),
        }
    }

    /// The REST path of the collection (in `namespace` if the kind is namespaced and one is given)
    /// or of one object.
    pub fn path(&self, namespace: Option<&str>, name: Option<&str>) -> String {
        let mut p = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        if let (true, Some(ns)) = (self.namespaced, namespace) {
            p.push_str("/namespaces/");
            p.push_str(&encode_segment(ns));
        }
        p.push('/');
        p.push_str(self.plural);
        if let Some(name) = name {
            p.push('/');
            p.push_str(&encode_segment(name));
        }
        p
    }

    /// `name/NAME` as `-o name` prints it.
    pub fn name_of(&self, name: &str) -> String {
        format!("{}/{name}", self.qualified_singular())
    }
}

/// Percent-encodes what must not appear raw in one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'@' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const KUBEVIRT: &str = "kubevirt.io";

/// Every kind fvctl knows by name, in the order `fvctl get` help lists them.
pub static KINDS: &[ResourceKind] = &[
    ResourceKind {
        group: KUBEVIRT,
        version: "v1",
        kind: "VirtualMachine",
        plural: "virtualmachines",
        singular: "virtualmachine",
        short_names: &["vm", "vms"],
        namespaced: true,
    },
    ResourceKind {
        group: KUBEVIRT,
        version: "v1",
        kind: "VirtualMachineInstance",
        plural: "virtualmachineinstances",
        singular: "virtualmachineinstance",
        short_names: &["vmi", "vmis"],
        namespaced: true,
    },
    ResourceKind {
        group: KUBEVIRT,
        version: "v1",
        kind: "VirtualMachineInstanceReplicaSet",
        plural: "virtualmachineinstancereplicasets",
        singular: "virtualmachineinstancereplicaset",
        short_names: &["vmirs", "vmirss"],
        namespaced: true,
    },
    ResourceKind {
        group: KUBEVIRT,
        version: "v1",
        kind: "VirtualMachineInstanceMigration",
        plural: "virtualmachineinstancemigrations",
        singular: "virtualmachineinstancemigration",
        short_names: &["vmim", "vmims"],
        namespaced: true,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
    },
    ResourceKind {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
    },
    ResourceKind {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        namespaced: true,
    },
];

/// The kind a word names: plural, singular, short name or kind, optionally `.group`-qualified,
/// case-insensitive. `None` if fvctl does not know it.
pub fn find(word: &str) -> Option<&'static ResourceKind> {
    let word = word.trim().to_ascii_lowercase();
    let (name, group) = match word.split_once('.') {
        Some((n, g)) => (n.to_string(), Some(g.to_string())),
        None => (word.clone(), None),
    };
    KINDS.iter().find(|k| {
        let names = k.plural == name
            || k.singular == name
            || k.kind.to_ascii_lowercase() == name
            || k.short_names.contains(&name.as_str());
        let group_ok = match &group {
            None => true,
            Some(g) => {
                *g == k.group
                    || (k.group.is_empty() && g == "core")
                    || *g == format!("{}.{}", k.version, k.group)
            }
        };
        names && group_ok
    })
}

/// [`find`], or a usage error listing what is known.
pub fn resolve(word: &str) -> Result<&'static ResourceKind> {
    find(word).ok_or_else(|| Error::UnknownResource {
        word: word.to_string(),
        known: known_words(),
    })
}

/// The kind for a manifest's `apiVersion` and `kind`, if fvctl knows it.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static ResourceKind> {
    KINDS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

/// `vms, vmis, vmirs, vmims, nodes, pods, events, namespaces, services, secrets, leases`
pub fn known_words() -> String {
    KINDS
        .iter()
        .map(|k| k.list_word())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `fvctl get` was asked for: one kind and the names given, from `TYPE [NAME...]` or
/// `TYPE/NAME [TYPE/NAME...]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Selection {
    pub kind: &'static ResourceKind,
    pub names: Vec<String>,
}

/// Parses the positional arguments of get/describe/delete/edit.
pub fn parse_selection(args: &[String]) -> Result<Vec<Selection>> {
    let Some(first) = args.first() else {
        return Err(Error::Usage(format!(
            "say what to act on, for example `fvctl get vms`; known types: {}",
            known_words()
        )));
    };
    if first.contains('/') {
        let mut out: Vec<Selection> = Vec::new();
        for arg in args {
            let Some((word, name)) = arg.split_once('/') else {
                return Err(Error::Usage(format!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (got {arg:?})"
                )));
            };
            if name.is_empty() {
                return Err(Error::Usage(format!(
                    "{arg:?} names no object after the '/'"
                )));
            }
            let kind = resolve(word)?;
            match out.iter_mut().find(|s| std::ptr::eq(s.kind, kind)) {
                Some(s) => s.names.push(name.to_string()),
                None => out.push(Selection {
                    kind,
                    names: vec![name.to_string()],
                }),
            }
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for word in first.split(',').filter(|w| !w.is_empty()) {
        out.push(Selection {
            kind: resolve(word)?,
            names: args[1..].to_vec(),
        });
    }
    if out.len() > 1 && args.len() > 1 {
        return Err(Error::Usage(
            "names can be given with one resource type only".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_resolves() {
        for w in [
            "vm",
            "vms",
            "VirtualMachine",
            "virtualmachine",
            "virtualmachines",
            "virtualmachines.kubevirt.io",
            "VM",
        ] {
            assert_eq!(find(w).map(|k| k.kind), Some("VirtualMachine"), "{w}");
        }
        for w in ["vmi", "vmis", "virtualmachineinstances"] {
            assert_eq!(
                find(w).map(|k| k.kind),
                Some("VirtualMachineInstance"),
                "{w}"
            );
        }
        for w in ["vmirs", "virtualmachineinstancereplicaset"] {
            assert_eq!(
                find(w).map(|k| k.kind),
                Some("VirtualMachineInstanceReplicaSet"),
                "{w}"
            );
        }
        for (w, k) in [
            ("no", "Node"),
            ("nodes", "Node"),
            ("po", "Pod"),
            ("pod", "Pod"),
            ("ev", "Event"),
            ("events", "Event"),
            ("pods.core", "Pod"),
        ] {
            assert_eq!(find(w).map(|k| k.kind), Some(k), "{w}");
        }
        assert_eq!(find("vm.apps"), None);
        assert_eq!(find("deployments"), None);
    }

    #[test]
    fn unknown_words_are_usage_errors() {
        let e = resolve("vmz").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("\"vmz\""), "{e}");
        assert!(e.to_string().contains("vms, vmis, vmirs"), "{e}");
    }

    #[test]
    fn paths_are_kubernetes_paths() {
        let vm = find("vm").unwrap();
        assert_eq!(
            vm.path(Some("default"), Some("vm1")),
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/vm1"
        );
        assert_eq!(vm.path(None, None), "/apis/kubevirt.io/v1/virtualmachines");
        let node = find("node").unwrap();
        assert_eq!(node.path(Some("default"), Some("n1")), "/api/v1/nodes/n1");
        assert_eq!(
            find("pods").unwrap().path(Some("a b"), None),
            "/api/v1/namespaces/a%20b/pods"
        );
    }

    #[test]
    fn names_print_like_kubectl() {
        assert_eq!(
            find("vm").unwrap().name_of("vm1"),
            "virtualmachine.kubevirt.io/vm1"
        );
        assert_eq!(find("pod").unwrap().name_of("p"), "pod/p");
        assert_eq!(find("vm").unwrap().list_word(), "vms");
        assert_eq!(find("node").unwrap().list_word(), "nodes");
        assert_eq!(find("vmirs").unwrap().list_word(), "vmirs");
    }

    #[test]
    fn selections_from_arguments() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let s = parse_selection(&args(&["vm", "a", "b"])).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].names, ["a", "b"]);
        let s = parse_selection(&args(&["vm/a", "vmi/b", "vm/c"])).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].kind.kind, s[0].names.clone()),
            ("VirtualMachine", vec!["a".to_string(), "c".to_string()])
        );
        let s = parse_selection(&args(&["vm,vmi"])).unwrap();
        assert_eq!(
            s.iter().map(|s| s.kind.kind).collect::<Vec<_>>(),
            ["VirtualMachine", "VirtualMachineInstance"]
        );
        assert!(parse_selection(&args(&["vm,vmi", "x"])).is_err());
        assert!(parse_selection(&args(&["vm/a", "b"])).is_err());
        assert!(parse_selection(&[]).is_err());
    }

    #[test]
    fn manifests_resolve_by_api_version_and_kind() {
        assert_eq!(
            by_api_version_kind("kubevirt.io/v1", "VirtualMachine").map(|k| k.plural),
            Some("virtualmachines")
        );
        assert_eq!(
            by_api_version_kind("v1", "Pod").map(|k| k.plural),
            Some("pods")
        );
        assert_eq!(by_api_version_kind("apps/v1", "Deployment"), None);
    }
}
