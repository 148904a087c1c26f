//! Group commit for the API's enqueues on SQLite: the requests that arrive while the store
//! commits others are committed together in one transaction, as a worker's settles are, so
//! that many clients enqueueing one job each are not held to one commit (one `fsync`) per
//! job. Each request still gets its own answer, in its own order.
//!
//! If a combined commit fails (one request's payload over the limit, or the store), nothing
//! of it was written (one SQLite transaction), and each request is then enqueued alone to get
//! its own answer. NATS enqueues are not one transaction, so on NATS each request goes to
//! the store as it comes.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::queue::{AnyBackend, Backend as _, Enqueued, NewJob, QueueError};

/// The most requests committed together.
const MAX_REQUESTS: usize = 512;

type Answer = Result<Vec<Enqueued>, QueueError>;

/// One request's jobs and where its answer goes.
struct Request {
    jobs: Vec<NewJob>,
    reply: oneshot::Sender<Answer>,
}

/// The enqueues of one server (shared by its clones), started with the first request.
#[derive(Clone, Default)]
pub struct Enqueuer {
    line: Arc<OnceLock<mpsc::UnboundedSender<Request>>>,
}

impl Enqueuer {
    /// Enqueue `jobs` on `backend`, committed with the other requests waiting.
    pub async fn enqueue(&self, backend: &AnyBackend, jobs: Vec<NewJob>) -> Answer {
        if !matches!(backend, AnyBackend::Sqlite(_)) {
            return backend.enqueue(jobs).await;
        }
        let line = self.line.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(commit_loop(backend.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let gone = || QueueError::Store("the server's enqueue task has stopped".to_owned());
        line.send(Request { jobs, reply }).map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// Commit what has accumulated while the last commit ran, until every sender is gone.
async fn commit_loop(backend: AnyBackend, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut waiting = Vec::with_capacity(MAX_REQUESTS);
    while rx.recv_many(&mut waiting, MAX_REQUESTS).await > 0 {
        let mut requests = std::mem::take(&mut waiting);
        if requests.len() == 1 {
            let Request { jobs, reply } = requests.remove(0);
            let _ = reply.send(backend.enqueue(jobs).await);
            continue;
        }
        let sizes: Vec<usize> = requests.iter().map(|r| r.jobs.len()).collect();
        let all: Vec<NewJob> = requests
            .iter()
            .flat_map(|r| r.jobs.iter().cloned())
            .collect();
        match backend.enqueue(all).await {
            Ok(mut answers) => {
                for (request, size) in requests.into_iter().zip(sizes) {
                    let rest = answers.split_off(size.min(answers.len()));
                    let _ = request.reply.send(Ok(answers));
                    answers = rest;
                }
            }
            Err(_) => {
                for Request { jobs, reply } in requests {
                    let _ = reply.send(backend.enqueue(jobs).await);
                }
            }
        }
    }
}
