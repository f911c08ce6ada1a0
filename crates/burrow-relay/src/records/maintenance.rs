//! The registry's background work: dropping expired records, and writing the snapshot.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::routes::unix_now;
use crate::Shared;

/// Starts the sweeper, and the snapshot writer if there is a snapshot file.
pub(crate) fn maintenance(shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    let Some(reg) = &shared.records else {
        return Vec::new();
    };
    let config = &shared.config.registry;
    let mut tasks = Vec::new();

    let store = reg.store.clone();
    let every = config.sweep_interval;
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let dropped = store.sweep(unix_now());
            if dropped > 0 {
                tracing::debug!(dropped, left = store.len(), "expired records dropped");
            }
        }
    }));

    if let Some(path) = config.snapshot.clone() {
        let store = reg.store.clone();
        let every = config.snapshot_interval;
        tasks.push(tokio::spawn(async move {
            let mut written = store.generation();
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let generation = store.generation();
                if generation == written {
                    continue;
                }
                let (store, path) = (store.clone(), path.clone());
                match tokio::task::spawn_blocking(move || store.save(&path)).await {
                    Ok(Ok(n)) => {
                        tracing::debug!(records = n, "records snapshot written");
                        written = generation;
                    }
                    Ok(Err(e)) => tracing::warn!("{e}"),
                    Err(e) => tracing::warn!("records snapshot writer failed: {e}"),
                }
            }
        }));
    }
    tasks
}

/// Writes the snapshot one last time, at shutdown.
pub(crate) async fn final_snapshot(shared: &Arc<Shared>) {
    let (Some(reg), Some(path)) = (&shared.records, shared.config.registry.snapshot.clone()) else {
        return;
    };
    let store = reg.store.clone();
    match tokio::task::spawn_blocking(move || store.save(&path)).await {
        Ok(Ok(n)) => tracing::info!(records = n, "records snapshot written"),
        Ok(Err(e)) => tracing::warn!("{e}"),
        Err(e) => tracing::warn!("records snapshot writer failed: {e}"),
    }
}
