//! `fvctl create vm`: a ready VirtualMachine manifest from a few flags, like `virtctl create vm`:
//! a containerDisk as the boot disk, an optional cloud-init NoCloud disk with the user's script,
//! and a masquerade interface on the pod network. Pure.

use serde_json::{json, Value};

use crate::errors::{Error, Result};

/// What the manifest is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub image: String,
    pub memory: String,
    pub cpus: u32,
    /// cloud-init user data (a `#!` script or `#cloud-config`).
    pub user_data: Option<String>,
    pub run_strategy: String,
    pub termination_grace_period: i64,
}

/// `vm-` and five lowercase letters or digits, from the clock (names need not be secret).
pub fn generated_name(nanos: u128) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = nanos;
    let mut s = String::from("vm-");
    for _ in 0..5 {
        s.push(ALPHABET[(n % ALPHABET.len() as u128) as usize] as char);
        n /= ALPHABET.len() as u128;
    }
    s
}

/// Checks the inputs a user typed, with messages that say which flag is wrong.
pub fn check(spec: &VmSpec) -> Result<()> {
    let name_errors = ferrovirt_api::admission::dns1123_label_errors(&spec.name);
    if !name_errors.is_empty() {
        return Err(Error::Usage(format!(
            "--name {:?}: {}",
            spec.name,
            name_errors.join("; ")
        )));
    }
    if spec.image.trim().is_empty() || spec.image.contains(char::is_whitespace) {
        return Err(Error::Usage(format!(
            "--image {:?} is not an image reference (registry/repository:tag)",
            spec.image
        )));
    }
    match ferrovirt_api::quantity::parse_quantity_bytes(&spec.memory) {
        Ok(b) if b >= 1 << 20 => {}
        Ok(_) => {
            return Err(Error::Usage(format!(
                "--memory {}: a guest needs at least 1Mi (try 256Mi)",
                spec.memory
            )))
        }
        Err(e) => {
            return Err(Error::Usage(format!(
                "--memory {:?} is not a quantity ({e}); write e.g. 256Mi or 1Gi",
                spec.memory
            )))
        }
    }
    if spec.cpus == 0 {
        return Err(Error::Usage("--cpus must be at least 1".into()));
    }
    if spec.termination_grace_period < 0 {
        return Err(Error::Usage(
            "--termination-grace-period must not be negative".into(),
        ));
    }
    Ok(())
}

/// The manifest.
pub fn manifest(spec: &VmSpec) -> Value {
    let mut disks = vec![json!({"name": "containerdisk", "disk": {"bus": "virtio"}})];
    let mut volumes =
        vec![json!({"name": "containerdisk", "containerDisk": {"image": spec.image}})];
    if let Some(user_data) = &spec.user_data {
        disks.push(json!({"name": "cloudinitdisk", "disk": {"bus": "virtio"}}));
        volumes.push(json!({"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": user_data}}));
    }
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": spec.name},
        "spec": {
            "runStrategy": spec.run_strategy,
            "template": {
                "metadata": {"labels": {"kubevirt.io/domain": spec.name}},
                "spec": {
                    "domain": {
                        "cpu": {"cores": spec.cpus},
                        "devices": {
                            "disks": disks,
                            "interfaces": [{"name": "default", "masquerade": {}}]
                        },
                        "resources": {"requests": {"memory": spec.memory}}
                    },
                    "networks": [{"name": "default", "pod": {}}],
                    "terminationGracePeriodSeconds": spec.termination_grace_period,
                    "volumes": volumes
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_api::admission;
    use ferrovirt_api::VirtualMachine;

    fn spec() -> VmSpec {
        VmSpec {
            name: "vm1".into(),
            image: "127.0.0.1:5000/guest:latest".into(),
            memory: "256Mi".into(),
            cpus: 2,
            user_data: Some("#!/bin/sh\necho hello\n".into()),
            run_strategy: "Always".into(),
            termination_grace_period: 30,
        }
    }

    #[test]
    fn the_manifest_passes_ferrovirts_admission() {
        for user_data in [None, Some("#!/bin/sh\necho hi\n".to_string())] {
            let s = VmSpec {
                user_data,
                ..spec()
            };
            let mut m = manifest(&s);
            // The server sets the namespace from the request path.
            m["metadata"]["namespace"] = json!("default");
            let mut vm: VirtualMachine = admission::decode(m).expect("decodes strictly");
            admission::default_vm(&mut vm);
            let errors = admission::validate_vm(&vm, None);
            assert!(errors.is_empty(), "{errors:?}");
        }
    }

    #[test]
    fn the_manifest_has_what_was_asked() {
        let m = manifest(&spec());
        let t = &m["spec"]["template"]["spec"];
        assert_eq!(t["domain"]["cpu"]["cores"], 2);
        assert_eq!(t["domain"]["resources"]["requests"]["memory"], "256Mi");
        assert_eq!(
            t["volumes"][0]["containerDisk"]["image"],
            "127.0.0.1:5000/guest:latest"
        );
        assert_eq!(
            t["volumes"][1]["cloudInitNoCloud"]["userData"],
            "#!/bin/sh\necho hello\n"
        );
        assert_eq!(
            t["domain"]["devices"]["interfaces"][0]["masquerade"],
            json!({})
        );
        assert_eq!(t["networks"][0]["pod"], json!({}));
        assert_eq!(m["spec"]["runStrategy"], "Always");
        let no_init = manifest(&VmSpec {
            user_data: None,
            ..spec()
        });
        assert_eq!(
            no_init["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn bad_flags_are_named() {
        let e = check(&VmSpec {
            name: "Bad_Name".into(),
            ..spec()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("--name \"Bad_Name\""), "{e}");
        let e = check(&VmSpec {
            memory: "lots".into(),
            ..spec()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("--memory \"lots\""), "{e}");
        assert!(check(&VmSpec { cpus: 0, ..spec() }).is_err());
        assert!(check(&VmSpec {
            image: "".into(),
            ..spec()
        })
        .is_err());
        assert!(check(&spec()).is_ok());
    }

    #[test]
    fn generated_names_are_valid() {
        for n in [0u128, 1, 123456789, u128::MAX] {
            let name = generated_name(n);
            assert!(admission::dns1123_label_errors(&name).is_empty(), "{name}");
            assert_eq!(name.len(), 8);
        }
    }
}
