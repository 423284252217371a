//! `fvctl cluster-info`, `fvctl version`, `fvctl completion`.

use serde_json::Value;

use crate::api::ListQuery;
use crate::cli::{Cli, CompletionArgs, VersionArgs};
use crate::errors::Result;
use crate::resources;
use crate::Ctx;

/// `Ready/total` of Nodes, from their Ready condition.
pub fn nodes_ready(nodes: &[Value]) -> (usize, usize) {
    let ready = nodes
        .iter()
        .filter(|n| {
            n.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
        })
        .count();
    (ready, nodes.len())
}

/// `fvctl cluster-info`.
pub async fn cluster_info(ctx: &Ctx) -> Result<()> {
    let version = ctx.rest.version().await?;
    let nodes = ctx
        .rest
        .list(
            resources::find("nodes").expect("known kind"),
            None,
            &ListQuery::default(),
        )
        .await?;
    let items = nodes
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (ready, total) = nodes_ready(&items);
    println!(
        "ferrovirt API server is running at {}",
        ctx.rest.cluster_url
    );
    println!(
        "Server version: {}",
        version
            .get("gitVersion")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
    );
    println!("Nodes ready: {ready}/{total}");
    for n in &items {
        let (r, _) = nodes_ready(std::slice::from_ref(n));
        let name = n
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let unschedulable = n.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true);
        println!(
            "  {name}: {}{}",
            if r == 1 { "Ready" } else { "NotReady" },
            if unschedulable {
                ", SchedulingDisabled"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The client's version line.
pub fn client_version() -> String {
    format!("Client Version: v{}", env!("CARGO_PKG_VERSION"))
}

/// `fvctl version`.
pub async fn version(ctx: Option<&Ctx>, args: &VersionArgs) -> Result<()> {
    println!("{}", client_version());
    if args.client {
        return Ok(());
    }
    if let Some(ctx) = ctx {
        let v = ctx.rest.version().await?;
        println!(
            "Server Version: {}",
            v.get("gitVersion")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
        );
    }
    Ok(())
}

/// `fvctl completion SHELL`.
pub fn completion(args: &CompletionArgs) {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(args.shell, &mut cmd, "fvctl", &mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_nodes_are_counted() {
        let nodes = [
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
            json!({}),
        ];
        assert_eq!(nodes_ready(&nodes), (1, 3));
    }
}
