//! Pull-through: serving a blob that a repository links to an upstream (an imported image's layer) but does not
//! hold yet. One upstream fetch per digest however many clients ask at once (a single flight per digest); the
//! bytes go to the clients that joined before the first byte as they arrive, while being hashed and written
//! through the blob store's staging seam straight to the content-addressed path (`BlobStore::put_stream_then`).
//! The last chunk is held back until the digest and size are verified, so no client ever gets a whole body that
//! does not match; it goes out while the blob is made durable and committed locally (clients never wait for the
//! disk), and every later read is local (also with the upstream gone).
//! Clients that arrive mid-flight, and range reads, wait for the commit and read locally. A location (a mirror, or
//! the source) whose bytes do not verify is passed over for the next one the image policy names ([`run`]).
//! Called by `service::blobs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use names::Digest;
use storage_backends::{BlobError, BlobStore, ByteStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::upstream::{Source, UpstreamError, Upstreams};

/// Chunks buffered per waiting client before the fetch waits for it.
const CLIENT_BUFFER: usize = 64;

/// What a client hears from a flight.
enum Msg {
    Chunk(Bytes),
    Failed(UpstreamError),
}

/// One upstream fetch in progress.
struct Flight {
    /// Clients that joined before the first byte was sent; `None` once sending started.
    joiners: Mutex<Option<Vec<mpsc::Sender<Msg>>>>,
    /// The outcome, once the blob is committed (`Ok`) or the fetch failed.
    done: watch::Sender<Option<Result<(), UpstreamError>>>,
}

impl Flight {
    /// Sends a chunk to every client still listening; closes the door to new joiners.
    async fn send(&self, msg: impl Fn() -> Msg, clients: &mut Vec<mpsc::Sender<Msg>>) {
        if let Some(joined) = self.joiners.lock().unwrap_or_else(|e| e.into_inner()).take() {
            clients.extend(joined);
        }
        let mut open = Vec::with_capacity(clients.len());
        for c in clients.drain(..) {
            if c.send(msg()).await.is_ok() {
                open.push(c);
            }
        }
        *clients = open;
    }
}

/// How a read of a missing blob goes on.
pub enum Joined {
    /// The body, as it streams in from the upstream.
    Streaming(ByteStream),
    /// The blob is now stored locally: read it from there.
    Local,
}

/// The flights in progress, by digest.
#[derive(Default)]
pub struct PullThrough {
    flights: Mutex<HashMap<Digest, Arc<Flight>>>,
}

impl PullThrough {
    /// Gets blob `digest` (`size` bytes, as the repository's link says) from `source`: joins the flight for it or
    /// starts one. With `stream_ok` false (a range read, a late joiner), waits for the local copy instead.
    /// Upstream failures before the first byte come back as errors; later ones end the body with an error.
    pub async fn fetch(
        self: &Arc<Self>,
        upstreams: &Arc<Upstreams>,
        blobs: &BlobStore,
        source: Source,
        digest: &Digest,
        size: u64,
        stream_ok: bool,
    ) -> Result<Joined, UpstreamError> {
        let (flight, leader) = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get(digest) {
                Some(f) => (f.clone(), false),
                None => {
                    let (done, _) = watch::channel(None);
                    let f = Arc::new(Flight { joiners: Mutex::new(Some(Vec::new())), done });
                    flights.insert(digest.clone(), f.clone());
                    (f, true)
                }
            }
        };
        let mut done = flight.done.subscribe();
        let receiver = if stream_ok {
            let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
            let mut joiners = flight.joiners.lock().unwrap_or_else(|e| e.into_inner());
            joiners.as_mut().map(|j| {
                j.push(tx);
                rx
            })
        } else {
            None
        };
        if leader {
            let (this, upstreams, blobs, digest) = (self.clone(), upstreams.clone(), blobs.clone(), digest.clone());
            let flight = flight.clone();
            tokio::spawn(async move {
                let outcome = run(&flight, &upstreams, &blobs, &source, &digest, size).await;
                // Whoever joined and heard nothing (an empty blob) learns the outcome from `done`.
                drop(flight.joiners.lock().unwrap_or_else(|e| e.into_inner()).take());
                if let Err(e) = &outcome {
                    tracing::warn!(%digest, error = %e, "pull-through fetch failed");
                }
                let flight = this.flights.lock().unwrap_or_else(|e| e.into_inner()).remove(&digest);
                if let Some(f) = flight {
                    f.done.send_replace(Some(outcome));
                }
            });
        }
        match receiver {
            Some(mut rx) => match rx.recv().await {
                Some(Msg::Chunk(first)) => {
                    // The body ends with its last byte, not when the flight ends (after the blob is committed):
                    // the client's connection is free for its next request while the store syncs.
                    let left = size.saturating_sub(first.len() as u64);
                    let rest = futures::stream::unfold((rx, left), |(mut rx, left)| async move {
                        if left == 0 {
                            return None;
                        }
                        match rx.recv().await? {
                            Msg::Chunk(c) => {
                                let left = left.saturating_sub(c.len() as u64);
                                Some((Ok(c), (rx, left)))
                            }
                            Msg::Failed(e) => Some((Err(std::io::Error::other(e.to_string())), (rx, left))),
                        }
                    });
                    Ok(Joined::Streaming(futures::stream::once(async { Ok(first) }).chain(rest).boxed()))
                }
                Some(Msg::Failed(e)) => Err(e),
                // The flight ended without sending (an empty blob): it is local now, or failed.
                None => wait(&mut done).await,
            },
            None => wait(&mut done).await,
        }
    }
}

async fn wait(done: &mut watch::Receiver<Option<Result<(), UpstreamError>>>) -> Result<Joined, UpstreamError> {
    let outcome =
        done.wait_for(|v| v.is_some()).await.map_err(|_| UpstreamError::Unavailable("fetch abandoned".into()))?;
    match outcome.as_ref() {
        Some(Ok(())) => Ok(Joined::Local),
        Some(Err(e)) => Err(e.clone()),
        None => Err(UpstreamError::Unavailable("fetch abandoned".into())),
    }
}

/// The flight's work: fetch, tee to the clients holding back the last chunk, verify, commit, release. A location
/// whose bytes do not verify (another digest, another size, a body cut short) is passed over and the next one the
/// image policy names is tried: transparently for the clients when none of its bytes reached them yet (a body of
/// one chunk, or an announced length that was wrong), else those clients' bodies end in an error while the flight
/// goes on, so that the blob is stored from the next location and the next read is local. Nothing that did not
/// verify is kept.
async fn run(
    flight: &Flight,
    upstreams: &Upstreams,
    blobs: &BlobStore,
    source: &Source,
    digest: &Digest,
    size: u64,
) -> Result<(), UpstreamError> {
    let mut clients = Vec::new();
    let mut source = source.clone();
    let mut passed_over: Vec<String> = Vec::new();
    loop {
        match attempt(flight, upstreams, blobs, &source, digest, size, &mut clients).await {
            Ok(()) => return Ok(()),
            Err(Attempt::Failed(e)) => {
                let e = if passed_over.is_empty() {
                    e
                } else {
                    e.with_message(format!("{e}; passed over before: {}", passed_over.join("; ")))
                };
                let err = e.clone();
                flight.send(move || Msg::Failed(err.clone()), &mut clients).await;
                return Err(e);
            }
            Err(Attempt::Unverified { by, error, sent }) => {
                tracing::warn!(%digest, location = %by, %error, clients_cut = sent,
                               "pull-through: bytes that do not verify; trying the next location");
                if sent {
                    // These clients already have some of the wrong bytes: their bodies end in an error.
                    let err = error.clone();
                    flight.send(move || Msg::Failed(err.clone()), &mut clients).await;
                    clients.clear();
                }
                passed_over.push(format!("{by}: {error}"));
                source.skip.push(by);
            }
        }
    }
}

/// How one location's attempt failed.
enum Attempt {
    /// Nothing (more) to try: the flight fails with this.
    Failed(UpstreamError),
    /// `by` sent bytes that do not verify (or broke off); `sent` says whether some reached the clients.
    Unverified { by: String, error: UpstreamError, sent: bool },
}

/// One fetch from the first location the image policy names (less `source.skip`), streamed to `clients`.
async fn attempt(
    flight: &Flight,
    upstreams: &Upstreams,
    blobs: &BlobStore,
    source: &Source,
    digest: &Digest,
    size: u64,
    clients: &mut Vec<mpsc::Sender<Msg>>,
) -> Result<(), Attempt> {
    let fetched = upstreams.blob(source, digest).await.map_err(Attempt::Failed)?;
    let by = fetched.served.by.clone();
    if fetched.length.is_some_and(|l| l != size) {
        let error = UpstreamError::Invalid(format!(
            "{by}: announces {} bytes for {digest}, the image says {size}",
            fetched.length.unwrap_or_default()
        ));
        return Err(Attempt::Unverified { by, error, sent: false });
    }
    let held: Arc<Mutex<Option<Bytes>>> = Arc::default();
    let sent = Arc::new(AtomicBool::new(false));
    let clients_cell = Arc::new(tokio::sync::Mutex::new(std::mem::take(clients)));
    // Bytes the clients got: never all `size` of them before verification (clients' bodies end at `size` bytes,
    // so a body that is too long must not complete one either).
    let forwarded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tee = {
        let (held, clients_cell, sent) = (held.clone(), clients_cell.clone(), sent.clone());
        fetched.body.then(move |item| {
            let (held, clients_cell, sent, forwarded) =
                (held.clone(), clients_cell.clone(), sent.clone(), forwarded.clone());
            async move {
                let chunk = item?;
                let previous = held.lock().unwrap_or_else(|e| e.into_inner()).replace(chunk.clone());
                let before = forwarded.load(Ordering::SeqCst);
                if let Some(prev) = previous.filter(|p| before + (p.len() as u64) < size) {
                    forwarded.store(before + prev.len() as u64, Ordering::SeqCst);
                    let mut clients = clients_cell.lock().await;
                    sent.store(true, Ordering::SeqCst);
                    flight.send(|| Msg::Chunk(prev.clone()), &mut clients).await;
                }
                Ok::<_, std::io::Error>(chunk)
            }
        })
    };
    // The last chunk goes out once every byte is verified, while the store makes the blob durable.
    let (verified, on_verified) = oneshot::channel::<()>();
    let store = blobs.put_stream_then(digest, size, Box::pin(tee), move || {
        let _ = verified.send(());
    });
    let release = async {
        if on_verified.await.is_ok() {
            let last = held.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(last) = last {
                let mut clients = clients_cell.lock().await;
                flight.send(|| Msg::Chunk(last.clone()), &mut clients).await;
            }
        }
    };
    let (stored, ()) = tokio::join!(store, release);
    *clients = std::mem::take(&mut *clients_cell.lock().await);
    let sent = sent.load(Ordering::SeqCst);
    let unverified = |error| Err(Attempt::Unverified { by: by.clone(), error, sent });
    match stored {
        Ok(()) => {}
        Err(BlobError::TooLarge(_)) => {
            return unverified(UpstreamError::Invalid(format!(
                "{by}: {digest} has more than the {size} bytes the image says; nothing was kept"
            )))
        }
        Err(BlobError::DigestMismatch { actual, size: got, .. }) => {
            return unverified(UpstreamError::Invalid(format!(
                "{by}: sent {got} bytes hashing to {actual} for {digest} ({size} bytes); nothing was kept"
            )))
        }
        Err(e @ BlobError::Body(_)) => {
            return unverified(UpstreamError::Unavailable(format!("{by}: reading {digest}: {e}")))
        }
        Err(e) => return Err(Attempt::Failed(UpstreamError::Unavailable(format!("storing {digest}: {e}")))),
    }
    Ok(())
}
