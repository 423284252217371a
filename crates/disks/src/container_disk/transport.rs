//! Which registries may be reached over plain HTTP.
//!
//! HTTPS for every registry, except loopback ones (`127.0.0.0/8`, `localhost`, `::1`) and those the
//! node lists in its `insecure_registries` setting (`host` or `host:port`). When an HTTPS pull
//! fails, [`answers_plain_http`] tells whether the registry speaks plain HTTP, so the refusal can
//! name the setting instead of showing a TLS error.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How to talk to a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Https,
    PlainHttp,
}

/// Splits `registry` (`host`, `host:port`, `[v6]:port`) into host and port.
pub(crate) fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':'));
        }
    }
    match registry.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (registry, None),
    }
}

/// Whether `registry` is on this machine's loopback interface.
pub(crate) fn is_loopback(registry: &str) -> bool {
    let (host, _) = split_host_port(registry);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Normalizes an `insecure_registries` entry: no scheme, no path, lower case.
fn normalize_entry(entry: &str) -> String {
    let entry = entry.trim();
    let entry = entry
        .strip_prefix("http://")
        .or_else(|| entry.strip_prefix("https://"))
        .unwrap_or(entry);
    entry
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Whether `registry` is listed in `insecure_registries` (exactly, or by host for any port).
pub(crate) fn is_listed_insecure(registry: &str, insecure_registries: &[String]) -> bool {
    let registry = registry.to_ascii_lowercase();
    let (host, _) = split_host_port(&registry);
    insecure_registries.iter().any(|entry| {
        let entry = normalize_entry(entry);
        !entry.is_empty()
            && (entry == registry || (split_host_port(&entry).1.is_none() && entry == host))
    })
}

/// The transport for `registry` under the node's settings.
pub(crate) fn transport_for(registry: &str, insecure_registries: &[String]) -> Transport {
    if is_loopback(registry) || is_listed_insecure(registry, insecure_registries) {
        Transport::PlainHttp
    } else {
        Transport::Https
    }
}

/// Whether `registry` answers a plain HTTP request (on its port, 443 if none).
pub(crate) async fn answers_plain_http(registry: &str) -> bool {
    let (host, port) = split_host_port(registry);
    let port = port.and_then(|p| p.parse::<u16>().ok()).unwrap_or(443);
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let request = format!("GET /v2/ HTTP/1.1\r\nHost: {registry}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        assert_eq!(
            split_host_port("127.0.0.1:5000"),
            ("127.0.0.1", Some("5000"))
        );
        assert_eq!(split_host_port("quay.io"), ("quay.io", None));
        assert_eq!(split_host_port("[::1]:5000"), ("::1", Some("5000")));
        assert_eq!(split_host_port("::1"), ("::1", None));
    }

    #[test]
    fn loopback_registries_use_plain_http() {
        for r in [
            "127.0.0.1:5000",
            "127.9.8.7",
            "localhost:5000",
            "LOCALHOST",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(r), "{r}");
            assert_eq!(transport_for(r, &[]), Transport::PlainHttp, "{r}");
        }
        for r in [
            "0.0.0.0:5000",
            "10.0.0.1:5000",
            "quay.io",
            "localhost.example.com",
            "128.0.0.1",
        ] {
            assert!(!is_loopback(r), "{r}");
            assert_eq!(transport_for(r, &[]), Transport::Https, "{r}");
        }
    }

    #[test]
    fn insecure_list_matches_host_port_or_host() {
        let list = vec![
            "registry.lab:5000".to_string(),
            "http://mirror.lab/".to_string(),
            " 10.1.2.3 ".to_string(),
        ];
        assert_eq!(
            transport_for("registry.lab:5000", &list),
            Transport::PlainHttp
        );
        assert_eq!(
            transport_for("REGISTRY.lab:5000", &list),
            Transport::PlainHttp
        );
        assert_eq!(transport_for("registry.lab:5001", &list), Transport::Https);
        assert_eq!(transport_for("registry.lab", &list), Transport::Https);
        assert_eq!(
            transport_for("mirror.lab:8080", &list),
            Transport::PlainHttp
        );
        assert_eq!(transport_for("10.1.2.3:5000", &list), Transport::PlainHttp);
        assert_eq!(transport_for("quay.io", &list), Transport::Https);
        assert_eq!(transport_for("quay.io", &[String::new()]), Transport::Https);
    }
}
