//! `spec.domain.firmware.kernelBoot`: a kernel (and initrd) that QEMU boots directly, shipped in a
//! container image, with the kernel command line `kernelArgs`.
//!
//! ```text
//!   plan_kernel_boot(spec, ctx)        pure: image, pull policy, pull Secret, kernelPath/initrdPath
//!        │ Option<PlannedKernelBoot>     checked (absolute, no '..', a kernel if an initrd)
//!        ▼
//!   prepare_kernel_boot(plan, ctx)     container_disk::pull_kernel_boot: the containerDisk pull
//!        │                             (registries, policies, cache by digest), taking the files at
//!        ▼                             kernelPath and initrdPath out of the image
//!   PreparedKernelBoot { kernel, initrd, kernel_args }   files in the node cache, read-only
//! ```
//!
//! Nothing is written to the VM folder: QEMU reads the kernel and initrd from the cache, which the
//! launcher gives it as a read-only folder. So there is nothing to undo when a later step fails.

use ferrovirt_api::kubevirt::VirtualMachineInstanceSpec;
use std::path::PathBuf;
use tracing::Instrument;

use crate::container_disk::{self, BootFile, KernelBootFiles, PullError, PullOptions, PullPolicy};
use crate::prepare::{pull_credentials, DiskContext};

/// `spec.domain.firmware.kernelBoot.container`.
const CONTAINER_FIELD: &str = "spec.domain.firmware.kernelBoot.container";

/// A kernelBoot container, checked and ready to pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedKernelBoot {
    /// The image reference.
    pub image: String,
    /// `kernelPath` and `initrdPath`, as written (absolute paths in the image).
    pub files: KernelBootFiles,
    /// Policy, registry settings and credentials.
    pub options: PullOptions,
    /// `kernelArgs`: the kernel command line, passed to QEMU as one argument.
    pub kernel_args: Option<String>,
}

/// A kernel and initrd in the node's cache, ready for QEMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedKernelBoot {
    /// The image reference, normalized.
    pub image: String,
    /// Its manifest digest.
    pub digest: String,
    /// The kernel (read-only, in the node cache).
    pub kernel: PathBuf,
    /// The initrd, if `initrdPath` was given (read-only, in the node cache).
    pub initrd: Option<PathBuf>,
    /// `kernelArgs`.
    pub kernel_args: Option<String>,
}

/// Why a VMI's kernelBoot cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum KernelBootError {
    /// A field that cannot be used as written.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, e.g. `spec.domain.firmware.kernelBoot.container.kernelPath`.
        field: String,
        /// Why.
        reason: String,
    },
    /// The image could not be pulled, or does not hold the files.
    #[error("{CONTAINER_FIELD}: {source}")]
    Pull {
        /// Why.
        #[source]
        source: Box<PullError>,
    },
}

fn invalid(field: &str, reason: impl Into<String>) -> KernelBootError {
    KernelBootError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Plans the kernelBoot of `spec` without I/O: `None` when there is no kernelBoot container.
pub fn plan_kernel_boot(
    spec: &VirtualMachineInstanceSpec,
    ctx: &DiskContext,
) -> Result<Option<PlannedKernelBoot>, KernelBootError> {
    let Some(kernel_boot) = spec
        .domain
        .firmware
        .as_ref()
        .and_then(|f| f.kernel_boot.as_ref())
    else {
        return Ok(None);
    };
    let Some(container) = &kernel_boot.container else {
        if kernel_boot.kernel_args.is_some() {
            return Err(invalid(
                "spec.domain.firmware.kernelBoot.kernelArgs",
                "kernelArgs needs a kernel: set kernelBoot.container",
            ));
        }
        return Ok(None);
    };
    if container.image.trim().is_empty() {
        return Err(invalid(
            &format!("{CONTAINER_FIELD}.image"),
            "the kernel boot container image is required",
        ));
    }
    let files = KernelBootFiles {
        kernel_path: container.kernel_path.clone(),
        initrd_path: container.initrd_path.clone(),
    };
    for (file, path) in [
        (BootFile::Kernel, &files.kernel_path),
        (BootFile::Initrd, &files.initrd_path),
    ] {
        if let Some(path) = path {
            if container_disk::image_file_path(path).is_none() {
                return Err(invalid(
                    file.field(),
                    format!("{path:?} must be an absolute path inside the image, without '..'"),
                ));
            }
        }
    }
    match (&files.kernel_path, &files.initrd_path) {
        (Some(_), _) => {}
        (None, Some(_)) => {
            return Err(invalid(
                BootFile::Initrd.field(),
                "QEMU loads an initrd only together with a kernel: set kernelPath too",
            ))
        }
        (None, None) => {
            return Err(invalid(
                CONTAINER_FIELD,
                "set kernelPath (and initrdPath if the kernel needs one)",
            ))
        }
    }
    let policy = PullPolicy::parse(container.image_pull_policy.as_deref(), &container.image)
        .map_err(|reason| invalid(&format!("{CONTAINER_FIELD}.imagePullPolicy"), reason))?;
    let credentials = pull_credentials(
        &container.image,
        container.image_pull_secret.as_deref(),
        &ctx.secrets,
    )
    .map_err(|reason| invalid(&format!("{CONTAINER_FIELD}.imagePullSecret"), reason))?;
    Ok(Some(PlannedKernelBoot {
        image: container.image.clone(),
        files,
        options: PullOptions {
            policy,
            image_path: None,
            insecure_registries: ctx.insecure_registries.clone(),
            credentials,
        },
        kernel_args: kernel_boot.kernel_args.clone(),
    }))
}

/// Pulls the planned kernelBoot container into the node cache under `ctx.cache_dir`.
pub async fn prepare_kernel_boot(
    plan: &PlannedKernelBoot,
    ctx: &DiskContext,
) -> Result<PreparedKernelBoot, KernelBootError> {
    let span = tracing::info_span!("kernel_boot", vmi = %ctx.vmi_name, uid = %ctx.vmi_uid);
    let cached =
        container_disk::pull_kernel_boot(&ctx.cache_dir, &plan.image, &plan.files, &plan.options)
            .instrument(span)
            .await
            .map_err(|source| KernelBootError::Pull {
                source: Box::new(source),
            })?;
    let kernel = cached.kernel.ok_or_else(|| {
        invalid(
            BootFile::Kernel.field(),
            "no kernel was taken from the image",
        )
    })?;
    tracing::info!(image = %cached.reference, digest = %cached.digest, kernel = %kernel.display(), "kernelBoot files ready");
    Ok(PreparedKernelBoot {
        image: cached.reference,
        digest: cached.digest,
        kernel,
        initrd: cached.initrd,
        kernel_args: plan.kernel_args.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(firmware: serde_json::Value) -> VirtualMachineInstanceSpec {
        serde_json::from_value(json!({"domain": {"devices": {}, "firmware": firmware}})).unwrap()
    }

    fn ctx() -> DiskContext {
        DiskContext {
            vmi_name: "vm1".into(),
            vmi_uid: "uid-1".into(),
            insecure_registries: vec!["registry.lab:5000".into()],
            ..DiskContext::default()
        }
    }

    fn err(firmware: serde_json::Value) -> String {
        plan_kernel_boot(&spec(firmware), &ctx())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn no_kernel_boot_or_no_container_plans_nothing() {
        assert_eq!(plan_kernel_boot(&spec(json!({})), &ctx()).unwrap(), None);
        assert_eq!(
            plan_kernel_boot(&spec(json!({"kernelBoot": {}})), &ctx()).unwrap(),
            None
        );
    }

    #[test]
    fn a_container_is_planned_with_its_files_args_and_policy() {
        let plan = plan_kernel_boot(
            &spec(json!({"kernelBoot": {
                "kernelArgs": "console=ttyS0 ferrovirt.marker=x",
                "container": {"image": "127.0.0.1:5000/k:v1", "kernelPath": "/boot/vmlinuz", "initrdPath": "/boot/initrd.gz"}
            }})),
            &ctx(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(plan.image, "127.0.0.1:5000/k:v1");
        assert_eq!(
            plan.files,
            KernelBootFiles {
                kernel_path: Some("/boot/vmlinuz".into()),
                initrd_path: Some("/boot/initrd.gz".into()),
            }
        );
        assert_eq!(
            plan.kernel_args.as_deref(),
            Some("console=ttyS0 ferrovirt.marker=x")
        );
        assert_eq!(plan.options.policy, PullPolicy::IfNotPresent);
        assert_eq!(plan.options.insecure_registries, ["registry.lab:5000"]);
        // :latest defaults to Always, as for containerDisks.
        let plan = plan_kernel_boot(
            &spec(json!({"kernelBoot": {"container": {"image": "r/k:latest", "kernelPath": "/vmlinuz"}}})),
            &ctx(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(plan.options.policy, PullPolicy::Always);
        assert_eq!(plan.kernel_args, None);
    }

    #[test]
    fn escaping_paths_are_refused_naming_the_field() {
        for (field, bad) in [
            ("kernelPath", "../../etc/shadow"),
            ("kernelPath", "boot/vmlinuz"),
            ("kernelPath", "/boot/../../etc/shadow"),
            ("kernelPath", "/"),
            ("initrdPath", "/a/../../b"),
            ("initrdPath", "initrd"),
        ] {
            let mut container = json!({"image": "r/k:1", "kernelPath": "/boot/vmlinuz"});
            container[field] = json!(bad);
            let message = err(json!({"kernelBoot": {"container": container}}));
            assert!(
                message.contains(&format!("kernelBoot.container.{field}: {bad:?}")),
                "{message}"
            );
            assert!(message.contains("without '..'"), "{message}");
        }
    }

    #[test]
    fn unusable_containers_are_refused_by_name() {
        let message =
            err(json!({"kernelBoot": {"container": {"image": "r/k:1", "initrdPath": "/initrd"}}}));
        assert!(
            message.starts_with("spec.domain.firmware.kernelBoot.container.initrdPath:"),
            "{message}"
        );
        let message = err(json!({"kernelBoot": {"container": {"image": "r/k:1"}}}));
        assert!(message.contains("set kernelPath"), "{message}");
        let message = err(json!({"kernelBoot": {"container": {"image": " ", "kernelPath": "/k"}}}));
        assert!(message.contains("container.image"), "{message}");
        let message = err(json!({"kernelBoot": {"kernelArgs": "quiet"}}));
        assert!(message.contains("kernelArgs"), "{message}");
        let message = err(
            json!({"kernelBoot": {"container": {"image": "r/k:1", "kernelPath": "/k", "imagePullPolicy": "Often"}}}),
        );
        assert!(
            message.contains("imagePullPolicy") && message.contains("Often"),
            "{message}"
        );
        let message = err(
            json!({"kernelBoot": {"container": {"image": "r/k:1", "kernelPath": "/k", "imagePullSecret": "creds"}}}),
        );
        assert!(
            message.contains("imagePullSecret") && message.contains("\"creds\" was not found"),
            "{message}"
        );
    }

    #[test]
    fn pull_secrets_give_credentials() {
        let mut c = ctx();
        c.secrets.insert(
            "creds".into(),
            [(
                ".dockerconfigjson".to_string(),
                br#"{"auths":{"registry.lab:5000":{"username":"u","password":"p"}}}"#.to_vec(),
            )]
            .into(),
        );
        let plan = plan_kernel_boot(
            &spec(json!({"kernelBoot": {"container": {"image": "registry.lab:5000/k:1", "kernelPath": "/k", "imagePullSecret": "creds"}}})),
            &c,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            plan.options.credentials,
            container_disk::RegistryCredentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
    }

    #[tokio::test]
    async fn never_without_cache_fails_without_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ctx();
        c.cache_dir = dir.path().to_path_buf();
        let plan = plan_kernel_boot(
            &spec(json!({"kernelBoot": {"container": {"image": "127.0.0.1:1/k:v1", "kernelPath": "/k", "imagePullPolicy": "Never"}}})),
            &c,
        )
        .unwrap()
        .unwrap();
        let e = prepare_kernel_boot(&plan, &c).await.unwrap_err();
        assert!(
            matches!(&e, KernelBootError::Pull { source } if matches!(**source, PullError::NotPresent { .. })),
            "{e}"
        );
        assert!(e.to_string().starts_with(CONTAINER_FIELD), "{e}");
    }
}
