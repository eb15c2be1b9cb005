//! Owns the single writer task: the one place that holds the writable store, fed by commands
//! over a bounded channel, so async code never blocks on sled and never races another writer.

use super::projection::AppState;
use super::sled_engine::{SledStore, StoreReader};
use super::{Appended, EventStore, Projections, StoreError};
use crate::event::{Digest, Draft, EventKind};
use tokio::sync::{mpsc, oneshot};

/// Why 64: a command is one logical batch (a whole sync's events, possibly thousands), so 64
/// queued batches bound memory to a few MB while letting producers (source, apply, drift watch)
/// run ahead of a slow flush; past that, producers wait instead of buffering without limit.
pub const CHANNEL_BOUND: usize = 64;

/// At most this many queued appends share one flush (bounds the wait of the first one).
const GROUP_COMMIT_MAX: usize = 64;

/// The batch's result and the kinds of its events (counted in the metrics once flushed).
fn write_batch(
    store: &mut SledStore,
    blobs: &[Vec<u8>],
    drafts: Vec<Draft>,
) -> (Result<Appended, StoreError>, Vec<EventKind>) {
    let kinds = drafts.iter().map(|d| d.event.kind()).collect();
    let result = (|| {
        for blob in blobs {
            store.put_blob(blob)?;
        }
        store.append(drafts)
    })();
    (result, kinds)
}

enum Command {
    Append {
        /// Canonical blobs the drafts refer to, written first so no event names a missing blob.
        blobs: Vec<Vec<u8>>,
        drafts: Vec<Draft>,
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    PutBlob {
        canonical: Vec<u8>,
        reply: oneshot::Sender<Result<Digest, StoreError>>,
    },
    Projections {
        reply: oneshot::Sender<Projections>,
    },
    AppState {
        app: String,
        reply: oneshot::Sender<Option<AppState>>,
    },
    AppProjections {
        app: String,
        reply: oneshot::Sender<Projections>,
    },
    CompleteAppState {
        app: String,
        reply: oneshot::Sender<Result<Option<AppState>, StoreError>>,
    },
    Close {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// An append queued by [`StoreHandle::queue_with_blobs`], not yet known to be durable.
pub struct Queued(oneshot::Receiver<Result<Appended, StoreError>>);

impl Queued {
    /// Resolves once the batch is flushed (or failed to be).
    pub async fn durable(self) -> Result<Appended, StoreError> {
        self.0.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// A cheap, cloneable handle: writes go to the writer task, reads go straight to sled.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Command>,
    reader: StoreReader,
    /// Bumped after every flush that made events durable: live readers (the API's event
    /// stream) wait on it instead of polling the store.
    appended: tokio::sync::watch::Receiver<u64>,
}

/// Moves `store` into a blocking writer task. The task ends (with a final snapshot and flush)
/// on [`StoreHandle::close`] or when every handle is dropped.
pub fn spawn(store: SledStore) -> (StoreHandle, tokio::task::JoinHandle<Result<(), StoreError>>) {
    let (tx, mut rx) = mpsc::channel(CHANNEL_BOUND);
    let (notify, appended) = tokio::sync::watch::channel(0u64);
    let reader = store.reader();
    let task = tokio::task::spawn_blocking(move || {
        let mut store = store;
        let mut next: Option<Command> = None;
        while let Some(cmd) = next.take().or_else(|| rx.blocking_recv()) {
            match cmd {
                Command::Append {
                    blobs,
                    drafts,
                    reply,
                } => {
                    // Group commit: every append already queued joins this flush, so many Apps
                    // recording at once pay for one flush, not one each. Each batch still gets
                    // its own result, acknowledged only once flushed.
                    let mut done = vec![(write_batch(&mut store, &blobs, drafts), reply)];
                    // Projection reads queued meanwhile join the group and are answered after
                    // its flush (so they see only durable state, as a read between two flushes
                    // does): a thousand Apps each reading their state between appends would
                    // otherwise cut every group down to one append and one flush.
                    let mut reads = Vec::new();
                    while done.len() + reads.len() < GROUP_COMMIT_MAX {
                        match rx.try_recv() {
                            Ok(Command::Append {
                                blobs,
                                drafts,
                                reply,
                            }) => done.push((write_batch(&mut store, &blobs, drafts), reply)),
                            Ok(
                                read @ (Command::AppState { .. } | Command::AppProjections { .. }),
                            ) => reads.push(read),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let mut flushed = store.flush().map_err(Some);
                    let mut any = false;
                    for ((result, kinds), reply) in done {
                        let r = match &mut flushed {
                            Ok(()) => result,
                            // Disk full and friends keep their own type for the first batch.
                            Err(cause) => Err(match cause.take() {
                                Some(e) => e,
                                None => StoreError::GroupFlush {
                                    reason: "see the error of the batch flushed with it".into(),
                                },
                            }),
                        };
                        // The one hook for event-derived metrics: only what is durable counts.
                        if r.is_ok() {
                            crate::metrics::METRICS.record_appended(kinds);
                            any = true;
                        }
                        let _ = reply.send(r);
                    }
                    if any {
                        notify.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    for read in reads {
                        answer_read(store.projections(), read);
                    }
                }
                Command::PutBlob { canonical, reply } => {
                    let _ = reply.send(store.put_blob(&canonical));
                }
                Command::Projections { reply } => {
                    let _ = reply.send(store.projections().clone());
                }
                read @ (Command::AppState { .. } | Command::AppProjections { .. }) => {
                    answer_read(store.projections(), read);
                }
                Command::CompleteAppState { app, reply } => {
                    let _ = reply.send(store.reader().complete_app(store.projections(), &app));
                }
                Command::Close { reply } => {
                    let _ = reply.send(store.close());
                    return Ok(());
                }
            }
        }
        store.close()
    });
    (
        StoreHandle {
            tx,
            reader,
            appended,
        },
        task,
    )
}

/// Answers a read of one App's projections (grouped with appends, or on its own).
fn answer_read(projections: &Projections, read: Command) {
    match read {
        Command::AppState { app, reply } => {
            let _ = reply.send(projections.apps.get(&app).cloned());
        }
        Command::AppProjections { app, reply } => {
            let _ = reply.send(projections.only(&app));
        }
        _ => unreachable!("only App reads are answered here"),
    }
}

impl StoreHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)
    }

    /// Appends one logical batch and flushes it; resolves once durable.
    pub async fn append(&self, drafts: Vec<Draft>) -> Result<Appended, StoreError> {
        self.append_with_blobs(Vec::new(), drafts).await
    }

    /// Writes `blobs` (canonical bytes; see [`super::blob`]) and appends `drafts` in one
    /// flush; resolves once both are durable.
    pub async fn append_with_blobs(
        &self,
        blobs: Vec<Vec<u8>>,
        drafts: Vec<Draft>,
    ) -> Result<Appended, StoreError> {
        self.call(|reply| Command::Append {
            blobs,
            drafts,
            reply,
        })
        .await?
    }

    /// Queues `blobs` and `drafts` like [`Self::append_with_blobs`] without waiting for the
    /// flush: the returned [`Queued`] resolves once they are durable. Batches one task queues
    /// are written in the order queued, so a caller may go on working (and queue more) while
    /// a flush runs, and wait for all of them at the end.
    pub async fn queue_with_blobs(
        &self,
        blobs: Vec<Vec<u8>>,
        drafts: Vec<Draft>,
    ) -> Result<Queued, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Append {
                blobs,
                drafts,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        Ok(Queued(rx))
    }

    pub async fn put_blob(&self, canonical: Vec<u8>) -> Result<Digest, StoreError> {
        self.call(|reply| Command::PutBlob { canonical, reply })
            .await?
    }

    /// Every App's projection (a clone of all of them: for whole-store views).
    pub async fn projections(&self) -> Result<Projections, StoreError> {
        self.call(|reply| Command::Projections { reply }).await
    }

    /// One App's projection as of the last append, `None` for an App the log never mentioned.
    /// Per-App callers (a poll, a sync) use this rather than cloning every App's state.
    pub async fn app_state(&self, app: &str) -> Result<Option<AppState>, StoreError> {
        let app = app.to_string();
        self.call(|reply| Command::AppState { app, reply }).await
    }

    /// One App's state with every revision it has, the stored ones read from the store (see
    /// `projection::stored`): for what needs the App's whole history (a rollback, a rename),
    /// not for per-pass reads, which [`Self::app_state`] answers from memory.
    pub async fn complete_app_state(&self, app: &str) -> Result<Option<AppState>, StoreError> {
        let app = app.to_string();
        self.call(|reply| Command::CompleteAppState { app, reply })
            .await?
    }

    /// One App's state and status (what its status needs) as projections holding that App
    /// alone, as of the last append; no App in them for an App the log never mentioned.
    pub async fn app_projections(&self, app: &str) -> Result<Projections, StoreError> {
        let app = app.to_string();
        self.call(|reply| Command::AppProjections { app, reply })
            .await
    }

    /// Snapshot, flush and stop the writer. This handle's reader is let go first: the writer
    /// frees sled's file lock before answering only when no reader is left, and a reader held
    /// here until after the answer made the lock go with it, a moment later, so an open right
    /// after `close` could find the store locked.
    pub async fn close(self) -> Result<(), StoreError> {
        let StoreHandle { tx, reader, .. } = self;
        drop(reader);
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Close { reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Changes after every flush that appended events (the value itself means nothing).
    pub fn appended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.clone()
    }

    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }
}
