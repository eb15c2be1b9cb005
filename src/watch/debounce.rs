//! Owns batching change notifications: a quiet period closes a batch, a maximum delay bounds
//! it, one entry per object (the latest kind of change wins), and merging instead of blocking
//! while the consumer is busy.

use crate::plan::{ObjectKey, ObjectRef};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What happened to a watched object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ChangeKind {
    /// Created or modified (by anyone, reckon included).
    Applied,
    Deleted,
}

/// One object that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub object: ObjectRef,
    pub kind: ChangeKind,
    /// The object's resourceVersion in the event (its last one for a deletion). The agent can
    /// tell its own applies from others' writes by comparing it with the executor's
    /// `ObjectOutcome::resource_version`.
    pub resource_version: Option<String>,
}

#[derive(Default)]
struct Pending(BTreeMap<ObjectKey, Change>);

impl Pending {
    fn add(&mut self, change: Change) {
        self.0.insert(change.object.key(), change);
    }

    fn take(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.0).into_values().collect()
    }
}

/// Runs until the input closes (every sender dropped) or the output's receiver is dropped.
pub async fn run(
    mut input: mpsc::Receiver<Change>,
    output: mpsc::Sender<Vec<Change>>,
    quiet: Duration,
    max_delay: Duration,
) {
    let mut pending = Pending::default();
    loop {
        // Idle: wait for the first change of a batch.
        let Some(first) = input.recv().await else {
            return;
        };
        pending.add(first);
        let deadline = Instant::now() + max_delay;
        // Collecting: until a quiet period passes or the deadline does.
        let mut input_open = true;
        while input_open {
            let until = (Instant::now() + quiet).min(deadline);
            tokio::select! {
                change = input.recv() => match change {
                    Some(change) => pending.add(change),
                    None => input_open = false,
                },
                _ = tokio::time::sleep_until(until) => break,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        // Delivering: wait for room, merging what keeps arriving into the same batch.
        loop {
            tokio::select! {
                permit = output.reserve() => {
                    match permit {
                        Ok(permit) => {
                            permit.send(pending.take());
                            break;
                        }
                        Err(_) => return,
                    }
                }
                change = input.recv(), if input_open => match change {
                    Some(change) => pending.add(change),
                    None => input_open = false,
                },
            }
        }
        if !input_open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, kind: ChangeKind) -> Change {
        Change {
            object: ObjectRef::from_api_version("v1", "ConfigMap", Some("ns"), name),
            kind,
            resource_version: None,
        }
    }

    fn names(batch: &[Change]) -> Vec<(&str, ChangeKind)> {
        batch
            .iter()
            .map(|c| (c.object.name.as_str(), c.kind))
            .collect()
    }

    #[tokio::test]
    async fn a_burst_is_one_batch_with_one_entry_per_object() {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out) = mpsc::channel(1);
        let task = tokio::spawn(run(
            rx,
            out_tx,
            Duration::from_millis(100),
            Duration::from_secs(5),
        ));
        for kind in [
            ChangeKind::Applied,
            ChangeKind::Applied,
            ChangeKind::Deleted,
        ] {
            tx.send(change("a", kind)).await.unwrap();
        }
        tx.send(change("b", ChangeKind::Applied)).await.unwrap();
        let started = Instant::now();
        let batch = out.recv().await.unwrap();
        assert_eq!(
            names(&batch),
            [("a", ChangeKind::Deleted), ("b", ChangeKind::Applied)]
        );
        assert!(started.elapsed() >= Duration::from_millis(90));
        // A later change is a new batch.
        tx.send(change("c", ChangeKind::Applied)).await.unwrap();
        assert_eq!(
            names(&out.recv().await.unwrap()),
            [("c", ChangeKind::Applied)]
        );
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_steady_stream_is_cut_at_the_maximum_delay() {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out) = mpsc::channel(1);
        tokio::spawn(run(
            rx,
            out_tx,
            Duration::from_millis(200),
            Duration::from_millis(300),
        ));
        let sender = tokio::spawn(async move {
            for i in 0..40 {
                tx.send(change(&format!("o{i}"), ChangeKind::Applied))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let first = out.recv().await.unwrap();
        // Changes every 50 ms never leave a 200 ms quiet period: the deadline cut the batch.
        assert!(started.elapsed() < Duration::from_millis(1000));
        assert!(first.len() >= 3 && first.len() < 40, "{}", first.len());
        sender.abort();
    }

    #[tokio::test]
    async fn a_busy_consumer_gets_merged_batches() {
        let (tx, rx) = mpsc::channel(16);
        let (out_tx, mut out) = mpsc::channel(1);
        tokio::spawn(run(
            rx,
            out_tx,
            Duration::from_millis(20),
            Duration::from_millis(50),
        ));
        tx.send(change("a", ChangeKind::Applied)).await.unwrap();
        // Once the first batch fills the one slot, produce two more batches' worth while
        // nobody reads.
        while out.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tx.send(change("b", ChangeKind::Applied)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(change("c", ChangeKind::Applied)).await.unwrap();
        tx.send(change("b", ChangeKind::Deleted)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            names(&out.recv().await.unwrap()),
            [("a", ChangeKind::Applied)]
        );
        assert_eq!(
            names(&out.recv().await.unwrap()),
            [("b", ChangeKind::Deleted), ("c", ChangeKind::Applied)]
        );
    }
}
