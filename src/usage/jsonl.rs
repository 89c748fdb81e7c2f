//! JSON-lines usage log, for people without a gRPC consumer.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::hub::UsageHub;
use super::record::UsageRecord;

/// Records waiting for the file writer before new ones are dropped.
const FILE_BUFFER: usize = 8192;

/// Appends every record to `path` (one JSON object per line) from a background task.
pub async fn spawn_jsonl_sink(hub: &UsageHub, path: PathBuf) -> std::io::Result<()> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await?;
    let (tx, mut rx) = mpsc::channel::<UsageRecord>(FILE_BUFFER);
    hub.set_file_sink(tx);
    tokio::spawn(async move {
        while let Some(record) = rx.recv().await {
            let mut line = match serde_json::to_vec(&record) {
                Ok(l) => l,
                Err(_) => continue,
            };
            line.push(b'\n');
            if let Err(e) = file.write_all(&line).await {
                tracing::error!(error = %e, path = %path.display(), "cannot write the usage log");
            }
            if rx.is_empty() {
                let _ = file.flush().await;
            }
        }
    });
    Ok(())
}
