//! The read path's Redis connection: pipelines go out as packed bytes and
//! their replies come back as the received buffers plus the position of
//! every element in them (RESP2 decoded by the `redis-protocol` crate
//! without copying). Stored values are never copied or allocated one by
//! one; the serving path reads them where they arrived.
//!
//! One task per connection writes queued pipelines and reads replies;
//! replies are matched to pipelines in order, as Redis sends them. A caller
//! that gives up (a timeout) leaves its replies to be read and dropped, so
//! the connection stays in step. Any I/O or protocol error fails every
//! pipeline in flight and ends the connection; the next read connects
//! again. The socket is watched while idle too, so a connection Redis
//! closed between requests (a restart, a failover, `CLIENT KILL`, an idle
//! timeout) ends at once and no request is sent on it.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// One reply: the buffer holding it and its frame, whose ranges index into
/// that buffer.
pub(super) struct Reply {
    pub bytes: Bytes,
    pub frame: RangeFrame,
}

impl Reply {
    /// The bytes of a range of this reply.
    pub fn slice(&self, range: (usize, usize)) -> &[u8] {
        self.bytes.get(range.0..range.1).unwrap_or_default()
    }
}

/// Why a pipeline got no replies.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum PipeError {
    #[error("Redis unreachable: {0}")]
    Io(String),
    #[error("Redis sent a reply larder cannot read: {0}")]
    Protocol(String),
    /// Redis refused the connection's AUTH or SELECT (its error reply).
    #[error("Redis refused the connection: {0}")]
    Refused(String),
}

struct Job {
    bytes: Vec<u8>,
    replies: usize,
    done: oneshot::Sender<Result<Vec<Reply>, PipeError>>,
}

struct Waiting {
    replies: usize,
    got: Vec<Reply>,
    done: oneshot::Sender<Result<Vec<Reply>, PipeError>>,
}

/// A handle on one connection; clones share it.
#[derive(Clone)]
pub(super) struct Pipe {
    jobs: mpsc::Sender<Job>,
}

/// Pipelines queued per connection before senders wait.
const QUEUE: usize = 1024;
/// Bytes read from the socket at a time, at least.
const READ_CHUNK: usize = 64 * 1024;
/// Written-but-unsent bytes above which no new pipeline is taken.
const MAX_UNSENT: usize = 1 << 20;

impl Pipe {
    /// Connects to the server `info` names, authenticates and selects its
    /// database. TLS addresses are not supported here.
    pub async fn connect(info: &ConnectionInfo) -> Result<Pipe, PipeError> {
        let io = |e: std::io::Error| PipeError::Io(e.to_string());
        let pipe = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(io)?;
                // Nagle would hold a small pipeline back behind the last.
                stream.set_nodelay(true).map_err(io)?;
                let (r, w) = stream.into_split();
                Pipe::start(r, w)
            }
            ConnectionAddr::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(io)?;
                let (r, w) = stream.into_split();
                Pipe::start(r, w)
            }
            _ => {
                return Err(PipeError::Io(
                    "TLS connections are not supported by larder's Redis reader".into(),
                ));
            }
        };
        let settings = info.redis_settings();
        let mut hello = redis::pipe();
        if let Some(password) = settings.password() {
            let auth = hello.cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
        }
        if settings.db() != 0 {
            hello.cmd("SELECT").arg(settings.db());
        }
        let n = hello.cmd_iter().count();
        if n > 0 {
            for reply in pipe.send(hello.get_packed_pipeline(), n).await? {
                if let RangeFrame::Error(r) = reply.frame {
                    return Err(PipeError::Refused(
                        String::from_utf8_lossy(reply.slice(r)).into_owned(),
                    ));
                }
            }
        }
        Ok(pipe)
    }

    fn start<R, W>(reader: R, writer: W) -> Pipe
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drive(reader, writer, rx));
        Pipe { jobs }
    }

    /// Whether the connection has ended (a new one is needed).
    pub fn is_closed(&self) -> bool {
        self.jobs.is_closed()
    }

    /// Sends packed commands and waits for their `replies` replies.
    pub async fn send(&self, bytes: Vec<u8>, replies: usize) -> Result<Vec<Reply>, PipeError> {
        let (done, answer) = oneshot::channel();
        let closed = || PipeError::Io("the connection to Redis closed".into());
        self.jobs
            .send(Job {
                bytes,
                replies,
                done,
            })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// Sleeps forever when there is nothing to wait for; `select!` needs a
/// future in every branch even when its condition is off.
async fn maybe<F: std::future::Future>(f: Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn drive<R, W>(mut reader: R, mut writer: W, mut jobs: mpsc::Receiver<Job>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut unsent: Vec<u8> = Vec::new();
    let mut sent = 0;
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut open = true;
    let failure = loop {
        if !open && waiting.is_empty() {
            return;
        }
        if input.capacity() - input.len() < READ_CHUNK / 4 {
            input.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            // Read even with nothing in flight: an idle connection's end
            // must be seen before a request is queued on it.
            read = reader.read_buf(&mut input) => {
                match read {
                    Ok(0) => break PipeError::Io("Redis closed the connection".into()),
                    Err(e) => break PipeError::Io(e.to_string()),
                    Ok(_) => {}
                }
                if let Err(e) = take_replies(&mut input, &mut waiting) {
                    break e;
                }
            }
            wrote = maybe((sent < unsent.len()).then(|| writer.write(&unsent[sent..]))) => {
                match wrote {
                    Ok(0) => break PipeError::Io("Redis stopped accepting writes".into()),
                    Err(e) => break PipeError::Io(e.to_string()),
                    Ok(n) => {
                        sent += n;
                        if sent == unsent.len() {
                            unsent.clear();
                            sent = 0;
                        }
                    }
                }
            }
            job = maybe((open && unsent.len() < MAX_UNSENT).then(|| jobs.recv())) => {
                let Some(job) = job else {
                    open = false;
                    continue;
                };
                queue(job, &mut unsent, &mut waiting);
                // Everything else already queued leaves in the same write.
                while unsent.len() < MAX_UNSENT
                    && let Ok(job) = jobs.try_recv()
                {
                    queue(job, &mut unsent, &mut waiting);
                }
            }
        }
    };
    // Closed first, so that a caller told of the failure already finds the
    // connection closed and makes a new one.
    jobs.close();
    for w in waiting {
        let _ = w.done.send(Err(failure.clone()));
    }
    while let Ok(job) = jobs.try_recv() {
        let _ = job.done.send(Err(failure.clone()));
    }
}

/// Adds a pipeline to the bytes to send and the replies to wait for.
fn queue(job: Job, unsent: &mut Vec<u8>, waiting: &mut VecDeque<Waiting>) {
    if job.done.is_closed() {
        // Its caller gave up before it was sent: skip it.
        return;
    }
    if job.replies == 0 {
        let _ = job.done.send(Ok(Vec::new()));
        return;
    }
    unsent.extend_from_slice(&job.bytes);
    waiting.push_back(Waiting {
        replies: job.replies,
        got: Vec::with_capacity(job.replies),
        done: job.done,
    });
}

/// Hands every complete reply in `input` to the pipeline it answers.
fn take_replies(input: &mut BytesMut, waiting: &mut VecDeque<Waiting>) -> Result<(), PipeError> {
    loop {
        let (frame, used) = match decode_range(input) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Ok(()),
            Err(e) => return Err(PipeError::Protocol(e.to_string())),
        };
        let bytes = input.split_to(used).freeze();
        let Some(front) = waiting.front_mut() else {
            return Err(PipeError::Protocol(
                "a reply arrived that no command asked for".into(),
            ));
        };
        front.got.push(Reply { bytes, frame });
        if front.got.len() == front.replies
            && let Some(w) = waiting.pop_front()
        {
            let _ = w.done.send(Ok(w.got));
        }
    }
}

/// How long a reader waits for a connection to be made.
pub(super) async fn connect_within(
    info: &ConnectionInfo,
    within: Duration,
) -> Result<Pipe, PipeError> {
    tokio::time::timeout(within, Pipe::connect(info))
        .await
        .map_err(|_| PipeError::Io(format!("connecting to Redis took over {within:?}")))?
}
