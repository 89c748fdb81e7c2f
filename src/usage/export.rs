//! The `UsageExport` gRPC service.

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::hub::{UsageHub, SUBSCRIBER_BUFFER};
use super::pb;
use super::pb::usage_export_server::UsageExport;

/// Streams usage records to each subscriber.
#[derive(Debug, Clone)]
pub struct UsageExportService {
    hub: UsageHub,
}

impl UsageExportService {
    pub fn new(hub: UsageHub) -> Self {
        Self { hub }
    }

    pub fn into_server(self) -> pb::usage_export_server::UsageExportServer<Self> {
        pb::usage_export_server::UsageExportServer::new(self)
    }
}

type RecordStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::UsageRecord, Status>> + Send>>;

#[tonic::async_trait]
impl UsageExport for UsageExportService {
    type SubscribeStream = RecordStream;

    async fn subscribe(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let rx = self.hub.subscribe(SUBSCRIBER_BUFFER);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}
