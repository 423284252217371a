//! Where a pod can go: Kubernetes' filters, a spread of replica sets over nodes, and a
//! least-allocated, balanced score, as pure functions of the pod, the nodes and the pods already
//! on them.
//!
//! ```text
//!   for each node:  Ready? ─► schedulable (not cordoned)? ─► taints tolerated? ─► nodeSelector and
//!                   required node affinity? ─► free cpu, memory, pods, other requested resources?
//!                   (the first filter that fails gives the node's reasons)
//!   fitting nodes ─► fewest pods of the pod's replica set (REPLICA_SET_LABEL)
//!                 ─► then the highest score (least allocated 0..=100 + balanced 0..=100 +
//!                    preferred node affinity 0..=200) ─► then the name
//!   none fit      ─► "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient memory."
//! ```
//!
//! The spread comes first, as a preference among the nodes that fit: six replicas on three equal
//! nodes land two per node, and a replica never goes to a node with more of its set while a node
//! with fewer has room. Placement rules (nodeSelector, affinity, taints, room) are never traded for
//! the spread.

use std::collections::BTreeMap;
use std::fmt;

use ferrovirt_api::quantity::{parse_quantity_bytes, parse_quantity_millis};
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

/// The name of a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(pub String);

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Label naming the replica set a launcher pod belongs to: its VMI's label, which the VMI got
/// from its `VirtualMachineInstanceReplicaSet` (KubeVirt's `kubevirt.io/vmReplicaSet`).
pub const REPLICA_SET_LABEL: &str = "kubevirt.io/vmReplicaSet";

/// Taint Kubernetes puts on cordoned nodes; a pod tolerating it may still go there.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Taint Kubernetes puts on nodes that are not Ready; a pod tolerating it may still go there.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Why a pod does not fit a node. `Display` gives Kubernetes' wording, as counted in the summary.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The node's Ready condition is not True.
    NotReady,
    /// `spec.unschedulable` (cordoned).
    Unschedulable,
    /// A NoSchedule or NoExecute taint the pod does not tolerate.
    UntoleratedTaint {
        /// Taint key.
        key: String,
        /// Taint value.
        value: String,
    },
    /// nodeSelector or required node affinity does not match.
    NodeAffinity,
    /// Not enough of a resource (`cpu`, `memory`, ...) left.
    Insufficient(String),
    /// The node's pod limit is reached.
    TooManyPods,
    /// A request of the pod is not a valid quantity.
    InvalidRequest(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::UntoleratedTaint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Reason::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Reason::Insufficient(resource) => write!(f, "Insufficient {resource}"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::InvalidRequest(what) => write!(f, "invalid resource request ({what})"),
        }
    }
}

/// No node fits the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unschedulable {
    /// Why each node was rejected.
    pub reasons: BTreeMap<NodeName, Vec<Reason>>,
    /// Kubernetes' summary, e.g. `0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient memory.`
    pub message: String,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Unschedulable {}

/// Amounts of resources: cpu in millicores, everything else in bytes or units.
pub type Resources = BTreeMap<String, u64>;

fn amount(resource: &str, q: &str) -> Option<u64> {
    if resource == "cpu" {
        parse_quantity_millis(q).ok()
    } else {
        parse_quantity_bytes(q).ok()
    }
}

/// What a pod requests: the sum over its containers, at least the largest init container, plus
/// the pod overhead (Kubernetes' effective request). Errors name a request that does not parse.
pub fn pod_requests(pod: &Pod) -> Result<Resources, String> {
    let Some(spec) = &pod.spec else { return Ok(Resources::new()) };
    let requests_of = |c: &k8s_openapi::api::core::v1::Container| -> Result<Resources, String> {
        let mut r = Resources::new();
        for (k, q) in c.resources.as_ref().and_then(|r| r.requests.as_ref()).into_iter().flatten() {
            let v = amount(k, &q.0).ok_or_else(|| format!("{} {k}={}", c.name, q.0))?;
            r.insert(k.clone(), v);
        }
        Ok(r)
    };
    let mut total = Resources::new();
    for c in &spec.containers {
        for (k, v) in requests_of(c)? {
            let e = total.entry(k).or_insert(0);
            *e = e.saturating_add(v);
        }
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in requests_of(c)? {
            let e = total.entry(k).or_insert(0);
            *e = (*e).max(v);
        }
    }
    for (k, q) in spec.overhead.iter().flatten() {
        let v = amount(k, &q.0).ok_or_else(|| format!("overhead {k}={}", q.0))?;
        let e = total.entry(k.clone()).or_insert(0);
        *e = e.saturating_add(v);
    }
    Ok(total)
}

/// What a node offers: `status.allocatable`, or `status.capacity` where allocatable is missing.
/// Quantities that do not parse count as zero.
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let mut out = Resources::new();
    for map in
        [status.and_then(|s| s.capacity.as_ref()), status.and_then(|s| s.allocatable.as_ref())].into_iter().flatten()
    {
        for (k, q) in map {
            out.insert(k.clone(), amount(k, &q.0).unwrap_or(0));
        }
    }
    out
}

fn node_name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

/// Whether a pod still holds its node's resources: bound, and not Succeeded or Failed.
pub fn occupies_node(pod: &Pod) -> bool {
    bound_node(pod).is_some()
        && !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Kubernetes' toleration matching: the effect matches (or the toleration names none), the key
/// matches (or is empty, which with `Exists` tolerates everything), and the value is equal
/// (operator `Equal`, the default) or anything (`Exists`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty()) {
        if key != taint.key {
            return false;
        }
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        _ => false,
    }
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default()
}

fn tolerates_all(pod: &Pod, taint: &Taint) -> bool {
    tolerations(pod).iter().any(|t| tolerates(t, taint))
}

fn synthetic_taint(key: &str) -> Taint {
    Taint { key: key.to_string(), effect: "NoSchedule".into(), value: None, time_added: None }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(number), values) else { return false };
            let Some(bound) = number(bound) else { return false };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches: every matchExpression against the labels and every
/// matchField (`metadata.name`) against the node; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs.iter().all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node_name(node))))
}

/// nodeSelector (every label equal) and required node affinity (any term matches).
pub fn matches_node_affinity(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else { return true };
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|sel| sel.node_selector_terms.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

/// A node with what its pods use.
#[derive(Clone, Debug)]
pub struct NodeInfo<'a> {
    /// The node.
    pub node: &'a Node,
    /// What it offers.
    pub allocatable: Resources,
    /// What the pods on it request.
    pub requested: Resources,
    /// How many pods occupy it.
    pub pods: u64,
}

impl<'a> NodeInfo<'a> {
    /// `node` with the pods among `pods` that occupy it.
    pub fn new(node: &'a Node, pods: &[Pod]) -> Self {
        let name = node_name(node);
        let mut requested = Resources::new();
        let mut count = 0;
        for p in pods.iter().filter(|p| occupies_node(p) && bound_node(p) == Some(name)) {
            count += 1;
            // A pod whose requests do not parse was bound by someone else; it counts as empty.
            for (k, v) in pod_requests(p).unwrap_or_default() {
                let e = requested.entry(k).or_insert(0);
                *e = e.saturating_add(v);
            }
        }
        NodeInfo { node, allocatable: node_allocatable(node), requested, pods: count }
    }

    fn free(&self, resource: &str) -> Option<u64> {
        let alloc = self.allocatable.get(resource)?;
        Some(alloc.saturating_sub(self.requested.get(resource).copied().unwrap_or(0)))
    }
}

/// Why `pod` does not fit `info`'s node (empty: it fits). The first failing filter decides, as
/// in Kubernetes; the resource filter reports every resource that is short.
pub fn check(pod: &Pod, requests: &Resources, info: &NodeInfo<'_>) -> Vec<Reason> {
    let node = info.node;
    if !is_ready(node) && !tolerates_all(pod, &synthetic_taint(TAINT_NOT_READY)) {
        return vec![Reason::NotReady];
    }
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    if cordoned && !tolerates_all(pod, &synthetic_taint(TAINT_UNSCHEDULABLE)) {
        return vec![Reason::Unschedulable];
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    if let Some(t) =
        taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute").find(|t| !tolerates_all(pod, t))
    {
        return vec![Reason::UntoleratedTaint { key: t.key.clone(), value: t.value.clone().unwrap_or_default() }];
    }
    if !matches_node_affinity(pod, node) {
        return vec![Reason::NodeAffinity];
    }
    let mut short = Vec::new();
    // A node that does not report a pod limit has none.
    if info.allocatable.get("pods").is_some_and(|max| info.pods >= *max) {
        short.push(Reason::TooManyPods);
    }
    for (resource, want) in requests.iter().filter(|(_, v)| **v > 0) {
        match info.free(resource) {
            Some(free) if free >= *want => {}
            // Kubernetes skips ephemeral storage on nodes that do not report it.
            None if resource == "ephemeral-storage" => {}
            _ => short.push(Reason::Insufficient(resource.clone())),
        }
    }
    short
}

/// A score for a fitting node; higher is better. Scores of several scorers add up.
pub trait Scorer {
    /// The score of placing a pod requesting `requests` on `info`'s node.
    fn score(&self, pod: &Pod, requests: &Resources, info: &NodeInfo<'_>) -> u64;
}

fn fraction_used(info: &NodeInfo<'_>, requests: &Resources, resource: &str) -> Option<(u128, u128)> {
    let alloc = u128::from(*info.allocatable.get(resource)?);
    if alloc == 0 {
        return None;
    }
    let used = u128::from(info.requested.get(resource).copied().unwrap_or(0))
        + u128::from(requests.get(resource).copied().unwrap_or(0));
    Some((used.min(alloc), alloc))
}

/// Kubernetes' LeastAllocated: the free share of cpu and memory after placing the pod, 0..=100.
pub struct LeastAllocated;

impl Scorer for LeastAllocated {
    fn score(&self, _pod: &Pod, requests: &Resources, info: &NodeInfo<'_>) -> u64 {
        let scores: Vec<u128> = ["cpu", "memory"]
            .iter()
            .filter_map(|r| fraction_used(info, requests, r))
            .map(|(used, alloc)| (alloc - used) * 100 / alloc)
            .collect();
        if scores.is_empty() {
            return 0;
        }
        (scores.iter().sum::<u128>() / scores.len() as u128) as u64
    }
}

/// Kubernetes' BalancedAllocation: cpu and memory used in the same proportion, 0..=100.
pub struct BalancedAllocation;

impl Scorer for BalancedAllocation {
    fn score(&self, _pod: &Pod, requests: &Resources, info: &NodeInfo<'_>) -> u64 {
        match (fraction_used(info, requests, "cpu"), fraction_used(info, requests, "memory")) {
            (Some((cu, ca)), Some((mu, ma))) => {
                // |cu/ca - mu/ma| in hundredths, computed exactly.
                let (a, b) = (cu * ma, mu * ca);
                let diff = a.abs_diff(b) * 100 / (ca * ma);
                (100 - diff.min(100)) as u64
            }
            _ => 100,
        }
    }
}

/// Kubernetes' NodeAffinity score: the weights of the pod's preferred node affinity terms that the
/// node matches, as a share of all their weights, counted double as Kubernetes weighs that plugin
/// (0..=200). Without preferences every node scores 0.
pub struct PreferredNodeAffinity;

impl Scorer for PreferredNodeAffinity {
    fn score(&self, pod: &Pod, _requests: &Resources, info: &NodeInfo<'_>) -> u64 {
        let terms = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default();
        let weight = |w: i32| u64::try_from(w).unwrap_or(0);
        let total: u64 = terms.iter().map(|t| weight(t.weight)).sum();
        if total == 0 {
            return 0;
        }
        let matched: u64 =
            terms.iter().filter(|t| term_matches(&t.preference, info.node)).map(|t| weight(t.weight)).sum();
        matched * 200 / total
    }
}

/// The default scorers: least allocated, balanced, preferred node affinity. They break ties between nodes holding
/// equally many pods of the pod's replica set (see [`same_set_counts`]).
pub fn default_scorers() -> Vec<Box<dyn Scorer + Send + Sync>> {
    vec![Box::new(LeastAllocated), Box::new(BalancedAllocation), Box::new(PreferredNodeAffinity)]
}

/// The replica set of `pod`: its namespace and the value of [`REPLICA_SET_LABEL`].
pub fn replica_set_of(pod: &Pod) -> Option<(&str, &str)> {
    let set = pod.metadata.labels.as_ref()?.get(REPLICA_SET_LABEL)?;
    Some((pod.metadata.namespace.as_deref().unwrap_or_default(), set.as_str()))
}

/// How many pods of `pod`'s replica set each node holds: bound there, not finished and not being
/// deleted (a leaving replica does not keep the next one away). Empty for a pod of no set.
pub fn same_set_counts<'a>(pod: &Pod, pods: &'a [Pod]) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    let Some(set) = replica_set_of(pod) else { return counts };
    for p in pods {
        if p.metadata.uid.is_some() && p.metadata.uid == pod.metadata.uid {
            continue;
        }
        if p.metadata.deletion_timestamp.is_some() || !occupies_node(p) || replica_set_of(p) != Some(set) {
            continue;
        }
        if let Some(node) = bound_node(p) {
            *counts.entry(node).or_insert(0) += 1;
        }
    }
    counts
}

/// Picks a node for `pod` among `nodes`, given all `pods` (those bound to a node and not
/// finished occupy it). Deterministic: among the nodes that fit, the one with the fewest pods of
/// the pod's replica set, then the highest score, then the first name.
pub fn schedule(pod: &Pod, nodes: &[Node], pods: &[Pod]) -> Result<NodeName, Unschedulable> {
    schedule_with(pod, nodes, pods, &default_scorers())
}

/// [`schedule`] with the given scorers.
pub fn schedule_with(
    pod: &Pod,
    nodes: &[Node],
    pods: &[Pod],
    scorers: &[Box<dyn Scorer + Send + Sync>],
) -> Result<NodeName, Unschedulable> {
    let requests = match pod_requests(pod) {
        Ok(r) => r,
        Err(bad) => {
            let reasons: BTreeMap<NodeName, Vec<Reason>> = nodes
                .iter()
                .map(|n| (NodeName(node_name(n).to_string()), vec![Reason::InvalidRequest(bad.clone())]))
                .collect();
            let message = summary(nodes.len(), &reasons);
            return Err(Unschedulable { reasons, message });
        }
    };
    let same_set = same_set_counts(pod, pods);
    // (pods of the set there, score, name): fewer first, then higher score, then the name.
    let mut best: Option<(usize, u64, &str)> = None;
    let mut reasons = BTreeMap::new();
    for node in nodes {
        let info = NodeInfo::new(node, pods);
        let why = check(pod, &requests, &info);
        let name = node_name(node);
        if !why.is_empty() {
            reasons.insert(NodeName(name.to_string()), why);
            continue;
        }
        let spread = same_set.get(name).copied().unwrap_or(0);
        let score: u64 = scorers.iter().map(|s| s.score(pod, &requests, &info)).sum();
        let better = match best {
            None => true,
            Some((c, s, n)) => (spread, std::cmp::Reverse(score), name) < (c, std::cmp::Reverse(s), n),
        };
        if better {
            best = Some((spread, score, name));
        }
    }
    match best {
        Some((_, _, name)) => Ok(NodeName(name.to_string())),
        None => {
            let message = summary(nodes.len(), &reasons);
            Err(Unschedulable { reasons, message })
        }
    }
}

/// Kubernetes' message: each reason with the number of nodes giving it, fewest first, then by
/// wording.
pub fn summary(nodes: usize, reasons: &BTreeMap<NodeName, Vec<Reason>>) -> String {
    if nodes == 0 {
        return "0/0 nodes are available: no nodes available to schedule pods.".to_string();
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for why in reasons.values() {
        for r in why {
            *counts.entry(r.to_string()).or_insert(0) += 1;
        }
    }
    let mut list: Vec<(String, usize)> = counts.into_iter().collect();
    list.sort_by(|(a, x), (b, y)| x.cmp(y).then_with(|| a.cmp(b)));
    let parts: Vec<String> = list.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests;
