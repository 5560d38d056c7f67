//! Recording issued certificates in the user CA's pki index with group commit: concurrent
//! issuances queue their certificate, one of them writes the whole queue in a single locked
//! read-modify-write (one fsync), and every waiter gets its own result. Without this, each
//! issuance rewrote and synced the index in turn and latency grew with the queue.

use crate::pki::store::Store;
use openssl::x509::X509;
use std::sync::mpsc;
use std::sync::Mutex;

type Outcome = Result<bool, String>;

/// The index writer of one signer.
pub(crate) struct Recorder {
    store: Store,
    queue: Mutex<Vec<(X509, String, mpsc::Sender<Outcome>)>>,
    commit: Mutex<()>,
}

impl Recorder {
    /// Records into `store`'s index.
    pub(crate) fn new(store: Store) -> Recorder {
        Recorder {
            store,
            queue: Mutex::new(Vec::new()),
            commit: Mutex::new(()),
        }
    }

    /// Records `cert` under `name`; false when its serial was already recorded. Blocks (call
    /// from a blocking thread) until the batch holding it is on disk.
    pub(crate) fn record(&self, cert: &X509, name: &str) -> Outcome {
        let (tx, rx) = mpsc::channel();
        crate::util::sync::lock(&self.queue).push((cert.clone(), name.to_string(), tx));
        loop {
            if let Ok(result) = rx.try_recv() {
                return result;
            }
            let _commit = crate::util::sync::lock(&self.commit);
            let batch = std::mem::take(&mut *crate::util::sync::lock(&self.queue));
            if batch.is_empty() {
                continue;
            }
            let certs: Vec<(X509, String)> = batch
                .iter()
                .map(|(c, n, _)| (c.clone(), n.clone()))
                .collect();
            match self.store.record_issued(&certs) {
                Ok(added) => {
                    for ((_, _, tx), ok) in batch.into_iter().zip(added) {
                        let _ = tx.send(Ok(ok));
                    }
                }
                Err(e) => {
                    for (_, _, tx) in batch {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            }
        }
    }
}
