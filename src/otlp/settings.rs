//! How and where spans are exported: OpenTelemetry's standard environment variables read
//! once at start, every value checked there (a bad one is an error naming its variable), and
//! the encoded resource.

use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::wire::{self, Value};

/// How and where spans are exported (OpenTelemetry's standard environment variables). Its
/// `Debug` leaves header values out: they may carry the collector's key.
pub struct Settings {
    pub(super) endpoint: String,
    /// TLS to an `https://` collector: the CA it trusts (the system's roots unless
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` names one) and the client's own certificate, if any.
    pub(super) tls: Option<ClientTlsConfig>,
    /// `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`: exports are sent gzip-compressed.
    pub(super) gzip: bool,
    pub(super) headers: MetadataMap,
    pub(super) timeout: Duration,
    pub(super) delay: Duration,
    pub(super) queue: usize,
    pub(super) batch: usize,
    /// The encoded `Resource` (service.name and `OTEL_RESOURCE_ATTRIBUTES`).
    pub(super) resource: Vec<u8>,
}

impl Settings {
    /// `endpoint` (`http://host:port`, or `https://` for TLS), the rest from
    /// `OTEL_EXPORTER_OTLP_{,TRACES_}HEADERS`, `..._TIMEOUT` (ms), `..._COMPRESSION`,
    /// `..._CERTIFICATE`, `..._CLIENT_KEY` and `..._CLIENT_CERTIFICATE`,
    /// `OTEL_BSP_SCHEDULE_DELAY` (ms), `OTEL_BSP_MAX_QUEUE_SIZE`,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`; a value that cannot be honoured is an error naming
    /// its variable.
    pub fn from_env(endpoint: &str, get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let pick = |traces: &str, generic: &str| {
            get(traces)
                .map(|v| (traces.to_string(), v))
                .or_else(|| get(generic).map(|v| (generic.to_string(), v)))
        };
        let tls = if endpoint.starts_with("https://") {
            Some(tls(&pick)?)
        } else if endpoint.starts_with("http://") {
            None
        } else {
            return Err(format!(
                "--otlp-endpoint {endpoint:?}: an http:// or https:// URL (the collector's \
                 OTLP/gRPC port, 4317 by default)"
            ));
        };
        let gzip = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) {
            None => false,
            Some((name, v)) => match v.trim() {
                "" | "none" => false,
                "gzip" => true,
                _ => {
                    return Err(format!(
                        "{name}={v:?}: \"gzip\" or \"none\" (the compressions OTLP defines)"
                    ))
                }
            },
        };
        if let Some((name, v)) = pick(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            if v.trim() != "grpc" {
                return Err(format!(
                    "{name}={v:?}: spans are exported over OTLP/gRPC only (\"grpc\"; a \
                     collector's gRPC port, 4317 by default)"
                ));
            }
        }
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{name}={v:?}: not a whole number")),
            }
        };
        let timeout = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            Some((name, _)) => number(&name, 10_000)?,
            None => 10_000,
        };
        let queue = number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?.max(1) as usize;
        let batch = (number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.max(1) as usize).min(queue);
        let mut headers = MetadataMap::new();
        if let Some((name, list)) = pick(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{name}: {pair:?} is not key=value"))?;
                let k = percent_decode(k.trim());
                let v = percent_decode(v.trim());
                let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("{name}: {k:?} is not a header name"))?;
                let value = MetadataValue::try_from(v.as_str())
                    .map_err(|_| format!("{name}: the value of {k:?} is not a header value"))?;
                headers.insert(key, value);
            }
        }
        Ok(Self {
            endpoint: endpoint.to_string(),
            tls,
            gzip,
            headers,
            timeout: Duration::from_millis(timeout),
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
            queue,
            batch,
            resource: resource(),
        })
    }
}

impl std::fmt::Debug for Settings {
    /// Header names only: their values may be the collector's key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self
            .headers
            .keys()
            .map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => k.as_str(),
                tonic::metadata::KeyRef::Binary(k) => k.as_str(),
            })
            .collect();
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .field("gzip", &self.gzip)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("delay", &self.delay)
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Settings {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The TLS settings of an `https://` collector, from `pick` (the `_TRACES_` variable, else the
/// generic one): files that cannot be read, or hold no PEM certificate or key, are errors naming
/// their variable, at start rather than at the first export.
fn tls(pick: &impl Fn(&str, &str) -> Option<(String, String)>) -> Result<ClientTlsConfig, String> {
    let pem = |(name, path): (String, String), key: bool| -> Result<Vec<u8>, String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("{name}={path:?}: {e}"))?;
        let found = if key {
            PrivateKeyDer::from_pem_slice(&bytes).is_ok()
        } else {
            CertificateDer::pem_slice_iter(&bytes).any(|c| c.is_ok())
        };
        if !found {
            let what = if key { "private key" } else { "certificate" };
            return Err(format!("{name}={path:?}: no PEM {what} in it"));
        }
        Ok(bytes)
    };
    let mut cfg = ClientTlsConfig::new();
    cfg = match pick(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ) {
        Some(file) => cfg.ca_certificate(Certificate::from_pem(pem(file, false)?)),
        None => cfg.with_native_roots(),
    };
    let key = pick(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    );
    let cert = pick(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    );
    match (key, cert) {
        (Some(key), Some(cert)) => {
            Ok(cfg.identity(Identity::from_pem(pem(cert, false)?, pem(key, true)?)))
        }
        (None, None) => Ok(cfg),
        (Some((name, _)), None) | (None, Some((name, _))) => Err(format!(
            "{name}: a client key and a client certificate go together \
             (OTEL_EXPORTER_OTLP_CLIENT_KEY and OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)"
        )),
    }
}

/// `%XX` escapes decoded (W3C baggage format, which the OTLP header variables use).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The encoded `Resource`: `service.name` = ai-extproc and what the SDK's detectors read
/// (`OTEL_RESOURCE_ATTRIBUTES`; Phoenix takes its project from `openinference.project.name`).
fn resource() -> Vec<u8> {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("ai-extproc")
        .build();
    let mut buf = Vec::new();
    for (k, v) in resource.iter() {
        let text;
        let value = match v {
            opentelemetry::Value::String(s) => Value::Str(s.as_str()),
            opentelemetry::Value::I64(i) => Value::Int(*i),
            opentelemetry::Value::F64(d) => Value::Double(*d),
            opentelemetry::Value::Bool(b) => Value::Bool(*b),
            other => {
                text = other.to_string();
                Value::Str(&text)
            }
        };
        wire::key_value(&mut buf, 1, k.as_str(), value);
    }
    buf
}
