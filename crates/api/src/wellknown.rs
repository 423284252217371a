//! Annotations and names that ferrovirt's components agree on, beyond KubeVirt's own.

/// Node annotation: after how many seconds without a Lease renewal the node agent kills its own
/// guests (fencing). The node lifecycle controller fails the node's VMIs only after that.
pub const FENCE_ANNOTATION: &str = "ferrovirt.io/fence-after-seconds";
/// Node annotation: hex SHA-256 of the node endpoint's certificate (DER), which the API server pins.
pub const ENDPOINT_FINGERPRINT_ANNOTATION: &str = "ferrovirt.io/endpoint-sha256";
/// The HTTP `Upgrade` protocol of a raw byte stream from a node endpoint (console, VNC).
pub const ENDPOINT_STREAM_PROTOCOL: &str = "ferrovirt-stream";
