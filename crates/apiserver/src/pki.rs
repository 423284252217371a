//! The cluster's identity: a CA, the admin bearer token, serving certificates and the kubeconfig.
//!
//! The first API server to start generates the CA key and the admin token and stores them in the
//! store itself (outside `/registry/`, so the API never serves them). Every later server, on the same
//! embedded database or the same etcd, loads them from there: two API servers on one etcd share one
//! CA and one token, so one kubeconfig works against both. Each server signs its own serving
//! certificate for the addresses it listens on, at every start.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use serde::{Deserialize, Serialize};

use ferrovirt_store::{Store, StoreError};

const BOOTSTRAP_KEY: &str = "/ferrovirt/bootstrap";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("storage error while loading the cluster identity: {0}")]
    Store(#[from] StoreError),
    #[error("the stored cluster identity is corrupt: {0}")]
    Corrupt(String),
    #[error("writing {path}: {source}")]
    Io { path: String, #[source] source: std::io::Error },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// What every API server of a cluster shares.
#[derive(Clone, Serialize, Deserialize)]
pub struct Bootstrap {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub admin_token: String,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bootstrap { .. }")
    }
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "ferrovirt-ca");
    params.distinguished_name.push(DnType::OrganizationName, "ferrovirt");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Bootstrap {
    fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        Ok(Bootstrap { ca_cert_pem: cert.pem(), ca_key_pem: key.serialize_pem(), admin_token: random_token() })
    }

    /// Load the cluster identity from the store, creating it if this is the first server.
    pub async fn load_or_create(store: &Arc<dyn Store>) -> Result<Self, PkiError> {
        loop {
            if let Some(kv) = store.get(BOOTSTRAP_KEY).await? {
                return serde_json::from_slice(&kv.value).map_err(|e| PkiError::Corrupt(e.to_string()));
            }
            let fresh = Self::generate()?;
            let bytes = serde_json::to_vec(&fresh).map_err(|e| PkiError::Corrupt(e.to_string()))?;
            match store.create(BOOTSTRAP_KEY, Bytes::from(bytes)).await {
                Ok(_) => return Ok(fresh),
                // Another server won the race: use its identity.
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A serving certificate for `localhost`, the loopback addresses, the listen address and `extra`.
    pub fn serving_cert(&self, listen: SocketAddr, extra: &[String]) -> Result<(String, String), PkiError> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        if let Ok(h) = hostname() {
            names.push(h);
        }
        names.extend(extra.iter().cloned());
        names.sort();
        names.dedup();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "ferrovirt-apiserver");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A client certificate for `common_name`, signed by the CA (how the API server proves itself to
    /// node endpoints).
    pub fn client_cert(&self, common_name: &str) -> Result<(String, String), PkiError> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A kubeconfig that kubectl, fvctl and kube-rs read as they are.
    pub fn kubeconfig(&self, server: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_cert_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ferrovirt\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: ferrovirt\n  context:\n    cluster: ferrovirt\n    user: admin\n    namespace: default\ncurrent-context: ferrovirt\npreferences: {{}}\n",
            token = self.admin_token
        )
    }
}

fn hostname() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string())
}

/// Write a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io { path: path.display().to_string(), source };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A rustls server configuration from PEM strings, offering HTTP/2 and HTTP/1.1.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, PkiError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .ok_or_else(|| PkiError::Tls("no private key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_certificate_is_signed_by_the_ca_and_loads() {
        let b = Bootstrap::generate().unwrap();
        let (cert, key) = b.serving_cert("127.0.0.1:6443".parse().unwrap(), &["node1.example".into()]).unwrap();
        assert!(cert.contains("BEGIN CERTIFICATE"));
        server_config(&cert, &key).unwrap();
        let kc = b.kubeconfig("https://127.0.0.1:6443");
        assert!(kc.contains("server: https://127.0.0.1:6443"));
        assert!(kc.contains(&b.admin_token));
    }
}
