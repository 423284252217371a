//! Registry credentials from an image pull Secret (`kubernetes.io/dockerconfigjson` with key
//! `.dockerconfigjson`, or the older `kubernetes.io/dockercfg` with key `.dockercfg`), as the
//! kubelet reads them.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use crate::SecretData;

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum RegistryCredentials {
    /// No credentials.
    #[default]
    Anonymous,
    /// HTTP basic authentication (also exchanged for a bearer token when the registry asks).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryCredentials::Anonymous => f.write_str("Anonymous"),
            RegistryCredentials::Basic { username, .. } => {
                write!(f, "Basic({username:?}, <redacted>)")
            }
        }
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The registry host a docker config key stands for: no scheme, no path, Docker Hub's aliases
/// folded into `docker.io`.
fn registry_of_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// The credentials a pull Secret holds for `registry` (as in the image reference, `docker.io` for
/// Docker Hub); anonymous if it holds none for that registry.
pub fn credentials_from_pull_secret(
    data: &SecretData,
    registry: &str,
) -> Result<RegistryCredentials, String> {
    let auths = if let Some(json) = data.get(".dockerconfigjson") {
        serde_json::from_slice::<DockerConfig>(json)
            .map_err(|e| format!("key .dockerconfigjson is not a docker config: {e}"))?
            .auths
    } else if let Some(json) = data.get(".dockercfg") {
        serde_json::from_slice::<BTreeMap<String, DockerAuth>>(json)
            .map_err(|e| format!("key .dockercfg is not a docker config: {e}"))?
    } else {
        return Err("it has neither a .dockerconfigjson nor a .dockercfg key".to_string());
    };
    let registry = registry_of_key(registry);
    let Some((key, entry)) = auths.iter().find(|(k, _)| registry_of_key(k) == registry) else {
        return Ok(RegistryCredentials::Anonymous);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryCredentials::Basic {
            username: username.clone(),
            password: password.clone(),
        });
    }
    let Some(auth) = &entry.auth else {
        return Err(format!("the entry for {key:?} has no credentials"));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("the auth of {key:?} is not base64: {e}"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| format!("the auth of {key:?} is not UTF-8 text"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| format!("the auth of {key:?} is not user:password"))?;
    Ok(RegistryCredentials::Basic {
        username: username.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, json: &str) -> SecretData {
        BTreeMap::from([(key.to_string(), json.as_bytes().to_vec())])
    }

    fn basic(u: &str, p: &str) -> RegistryCredentials {
        RegistryCredentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn dockerconfigjson_auth_field() {
        // base64("alice:s3:cret")
        let data = secret(
            ".dockerconfigjson",
            r#"{"auths":{"registry.lab:5000":{"auth":"YWxpY2U6czM6Y3JldA=="}}}"#,
        );
        assert_eq!(
            credentials_from_pull_secret(&data, "registry.lab:5000"),
            Ok(basic("alice", "s3:cret"))
        );
        assert_eq!(
            credentials_from_pull_secret(&data, "other.lab"),
            Ok(RegistryCredentials::Anonymous)
        );
    }

    #[test]
    fn username_password_and_docker_hub_aliases() {
        let data = secret(
            ".dockerconfigjson",
            r#"{"auths":{"https://index.docker.io/v1/":{"username":"bob","password":"pw"}}}"#,
        );
        assert_eq!(
            credentials_from_pull_secret(&data, "docker.io"),
            Ok(basic("bob", "pw"))
        );
        let legacy = secret(".dockercfg", r#"{"quay.io":{"auth":"Ym9iOnB3"}}"#);
        assert_eq!(
            credentials_from_pull_secret(&legacy, "quay.io"),
            Ok(basic("bob", "pw"))
        );
    }

    #[test]
    fn malformed_secrets_say_why() {
        let none = credentials_from_pull_secret(&SecretData::new(), "quay.io").unwrap_err();
        assert!(none.contains(".dockerconfigjson"), "{none}");
        let bad = credentials_from_pull_secret(&secret(".dockerconfigjson", "["), "q").unwrap_err();
        assert!(bad.contains("not a docker config"), "{bad}");
        let no_colon = secret(".dockerconfigjson", r#"{"auths":{"q":{"auth":"Ym9i"}}}"#);
        assert!(credentials_from_pull_secret(&no_colon, "q")
            .unwrap_err()
            .contains("user:password"));
        assert!(!format!("{:?}", basic("u", "hunter2")).contains("hunter2"));
    }
}
