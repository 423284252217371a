//! The VM commands, with virtctl's names and meaning: `start`, `stop`, `restart`, `pause`,
//! `unpause`, `soft-reboot`, `guestosinfo`, `create vm`. Each is one KubeVirt subresource call
//! (`/apis/subresources.kubevirt.io/v1/...`), optionally followed by a [`wait`](crate::wait).

use serde_json::{json, Value};

use crate::api::ListQuery;
use crate::apply;
use crate::cli::{CreateVmArgs, PauseArgs, StartArgs, StopArgs, VmOrVmi, WaitArgs, WaitFlags};
use crate::errors::{Error, Result};
use crate::manifest::Manifest;
use crate::output;
use crate::resources::{self, ResourceKind};
use crate::vm_manifest::{self, VmSpec};
use crate::wait::{self, Goal};
use crate::Ctx;

fn vm_kind() -> &'static ResourceKind {
    resources::find("vm").expect("known kind")
}

fn vmi_kind() -> &'static ResourceKind {
    resources::find("vmi").expect("known kind")
}

/// A 404 from a subresource: say which object is missing (the VM, or its instance).
async fn explain_not_found(
    ctx: &Ctx,
    e: Error,
    name: &str,
    need_vm: bool,
    need_vmi: bool,
) -> Error {
    let Error::Api(f) = &e else { return e };
    if !f.is_not_found() {
        return e;
    }
    let ns = Some(ctx.namespace.as_str());
    if need_vm {
        if let Ok(None) = ctx.rest.get_opt(vm_kind(), ns, name).await {
            return Error::NotFound {
                kind: vm_kind(),
                name: name.to_string(),
                namespace: ns.map(str::to_string),
            };
        }
    }
    if need_vmi {
        if let Ok(None) = ctx.rest.get_opt(vmi_kind(), ns, name).await {
            if need_vm {
                return Error::Failed(format!(
                    "virtualmachine {name:?} is not running (it has no instance); start it with `fvctl start {name}`"
                ));
            }
            return Error::NotFound {
                kind: vmi_kind(),
                name: name.to_string(),
                namespace: ns.map(str::to_string),
            };
        }
    }
    e
}

async fn vm_action(ctx: &Ctx, name: &str, action: &str, body: &Value) -> Result<()> {
    match ctx
        .rest
        .subresource_put("virtualmachines", &ctx.namespace, name, action, body)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) => Err(explain_not_found(ctx, e, name, true, false).await),
    }
}

async fn finish(
    ctx: &Ctx,
    name: &str,
    goal: Goal,
    vm_expected: bool,
    flags: &WaitFlags,
) -> Result<()> {
    if !flags.wait {
        return Ok(());
    }
    let what = if vm_expected { "VM" } else { "VMI" };
    let state = wait::wait_for(
        &ctx.rest,
        &ctx.namespace,
        name,
        &goal,
        vm_expected,
        flags.timeout,
    )
    .await?;
    println!("{what} {name} is {}: {state}", goal.describe());
    Ok(())
}

/// `fvctl start`.
pub async fn start(ctx: &Ctx, args: &StartArgs) -> Result<()> {
    let body = if args.paused {
        json!({"paused": true})
    } else {
        json!({})
    };
    vm_action(ctx, &args.name, "start", &body).await?;
    println!("VM {} was scheduled to start", args.name);
    let goal = if args.paused {
        Goal::Paused
    } else {
        Goal::Running
    };
    finish(ctx, &args.name, goal, true, &args.wait).await
}

/// `fvctl restart`.
pub async fn restart(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    let old = ctx
        .rest
        .get_opt(vmi_kind(), Some(&ctx.namespace), &args.name)
        .await?;
    let old_uid = old
        .as_ref()
        .and_then(|v| v.pointer("/metadata/uid"))
        .and_then(Value::as_str)
        .map(str::to_string);
    vm_action(ctx, &args.name, "restart", &json!({})).await?;
    println!("VM {} was scheduled to restart", args.name);
    finish(
        ctx,
        &args.name,
        Goal::Restarted { old_uid },
        true,
        &args.wait,
    )
    .await
}

/// `fvctl stop`. With `--force --grace-period N` the server is asked for that grace period
/// (KubeVirt's `StopOptions.gracePeriod`); a server that does not take it yet is served the way
/// KubeVirt's own handler works it out: the VM is stopped and its launcher Pod deleted with that
/// grace period, which the node honours.
pub async fn stop(ctx: &Ctx, args: &StopArgs) -> Result<()> {
    let name = &args.name;
    let Some(grace) = args.grace_period.filter(|_| args.force) else {
        vm_action(ctx, name, "stop", &json!({})).await?;
        println!("VM {name} was scheduled to stop");
        return finish(ctx, name, Goal::Stopped, true, &args.wait).await;
    };
    if grace < 0 {
        return Err(Error::Usage("--grace-period must be 0 or more".into()));
    }
    match vm_action(ctx, name, "stop", &json!({"gracePeriod": grace})).await {
        Ok(()) => println!("VM {name} was scheduled to stop (grace period {grace}s)"),
        Err(Error::Api(f)) if f.code == 400 && f.message.contains("gracePeriod") => {
            // Find the launcher Pod(s) first: the instance goes away once stopped.
            let vmi = ctx
                .rest
                .get_opt(vmi_kind(), Some(&ctx.namespace), name)
                .await?;
            let uid = vmi
                .as_ref()
                .and_then(|v| v.pointer("/metadata/uid"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let pods_kind = resources::find("pods").expect("known kind");
            let mut pods = Vec::new();
            if let Some(uid) = &uid {
                let q = ListQuery {
                    label_selector: Some(format!("kubevirt.io/created-by={uid}")),
                    ..Default::default()
                };
                let list = ctx.rest.list(pods_kind, Some(&ctx.namespace), &q).await?;
                for p in list
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(n) = p.pointer("/metadata/name").and_then(Value::as_str) {
                        pods.push(n.to_string());
                    }
                }
            }
            vm_action(ctx, name, "stop", &json!({})).await?;
            for pod in &pods {
                match ctx
                    .rest
                    .delete(pods_kind, Some(&ctx.namespace), pod, Some(grace))
                    .await
                {
                    Ok(_) | Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            if pods.is_empty() {
                println!("VM {name} was scheduled to stop (it had no launcher pod to force)");
            } else {
                println!("VM {name} was scheduled to stop; launcher pod {} deleted with grace period {grace}s", pods.join(", "));
            }
        }
        Err(e) => return Err(e),
    }
    finish(ctx, name, Goal::Stopped, true, &args.wait).await
}

/// `fvctl pause` (`pause == true`) and `fvctl unpause`.
pub async fn pause(ctx: &Ctx, args: &PauseArgs, pause: bool) -> Result<()> {
    let action = if pause { "pause" } else { "unpause" };
    let vm = args.what == VmOrVmi::Vm;
    if let Err(e) = ctx
        .rest
        .subresource_put(
            "virtualmachineinstances",
            &ctx.namespace,
            &args.name,
            action,
            &json!({}),
        )
        .await
    {
        return Err(explain_not_found(ctx, e, &args.name, vm, true).await);
    }
    let what = if vm { "VM" } else { "VMI" };
    println!("{what} {} was scheduled to {action}", args.name);
    let goal = if pause { Goal::Paused } else { Goal::Unpaused };
    finish(ctx, &args.name, goal, vm, &args.wait).await
}

/// `fvctl soft-reboot`.
pub async fn soft_reboot(ctx: &Ctx, name: &str) -> Result<()> {
    if let Err(e) = ctx
        .rest
        .subresource_put(
            "virtualmachineinstances",
            &ctx.namespace,
            name,
            "softreboot",
            &json!({}),
        )
        .await
    {
        return Err(explain_not_found(ctx, e, name, false, true).await);
    }
    println!("VMI {name} was scheduled to softreboot");
    Ok(())
}

/// `fvctl guestosinfo`: what the guest agent reports, as JSON.
pub async fn guestosinfo(ctx: &Ctx, name: &str) -> Result<()> {
    match ctx
        .rest
        .subresource_get(
            "virtualmachineinstances",
            &ctx.namespace,
            name,
            "guestosinfo",
        )
        .await
    {
        Ok(info) => {
            print!("{}", output::to_json(&info));
            Ok(())
        }
        Err(e) => Err(explain_not_found(ctx, e, name, false, true).await),
    }
}

/// `fvctl create vm`.
pub async fn create_vm(ctx: Option<&Ctx>, args: &CreateVmArgs) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        vm_manifest::generated_name(nanos)
    });
    let user_data =
        match &args.cloud_init_script {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                Error::Usage(format!("--cloud-init-script {}: {e}", path.display()))
            })?),
            None => None,
        };
    let spec = VmSpec {
        name,
        image: args.image.clone(),
        memory: args.memory.clone(),
        cpus: args.cpus,
        user_data,
        run_strategy: args.run_strategy.clone(),
        termination_grace_period: args.termination_grace_period,
    };
    vm_manifest::check(&spec)?;
    let manifest = vm_manifest::manifest(&spec);
    let Some(ctx) = ctx.filter(|_| args.apply) else {
        print!("{}", output::to_yaml(&manifest));
        return Ok(());
    };
    let m = Manifest {
        source: "fvctl create vm".into(),
        object: manifest,
    };
    let (kind, name, outcome) =
        apply::apply_one(&ctx.rest, &m, &ctx.namespace, ctx.explicit_namespace, false).await?;
    crate::objects::print_outcome(kind, &name, outcome);
    Ok(())
}
