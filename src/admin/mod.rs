//! Operating the processor: health (gRPC `grpc.health.v1` via tonic-health, and admin HTTP
//! `/healthz`, `/readyz`), Prometheus `/metrics`, and the drain state shared by both.

#[cfg(test)]
mod dashboard;
mod metrics;
mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use metrics::{Metrics, ModelLabels};
pub use server::{serve_admin, AdminState};

/// Liveness, readiness and drain, as seen by Envoy's gRPC health check and by HTTP probes.
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    reporter: tonic_health::server::HealthReporter,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("ready", &self.is_ready())
            .field("draining", &self.is_draining())
            .finish()
    }
}

/// The gRPC health service to add to the processor's server.
pub type HealthService =
    tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

/// The service name Envoy's gRPC health check may ask for (empty means the whole server).
pub const EXT_PROC_SERVICE: &str = "envoy.service.ext_proc.v3.ExternalProcessor";

impl Health {
    /// Starts NOT_SERVING until [`Health::set_ready`].
    pub async fn new() -> (Self, HealthService) {
        let reporter = tonic_health::server::HealthReporter::new();
        let service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        let health = Self {
            ready: Arc::default(),
            draining: Arc::default(),
            reporter,
        };
        health.publish().await;
        (health, service)
    }

    async fn publish(&self) {
        use tonic_health::ServingStatus::{NotServing, Serving};
        let status = if self.is_ready() && !self.is_draining() {
            Serving
        } else {
            NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(EXT_PROC_SERVICE, status)
            .await;
    }

    /// A valid config is loaded.
    pub async fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
        self.publish().await;
    }

    /// Shutting down: stop taking new work.
    pub async fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.publish().await;
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
