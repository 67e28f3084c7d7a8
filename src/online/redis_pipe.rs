//! The read path's Redis connection: pipelines go out as packed bytes and
//! their replies come back as the received buffers, one per reply. The
//! connection only finds where each RESP2 reply ends; the caller reads the
//! elements it wants where they arrived ([`Reply::items`]). Nothing is
//! built per element: stored values are never copied or allocated one by
//! one.
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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// One complete RESP2 reply, as received.
pub(super) struct Reply {
    pub bytes: Bytes,
}

/// An element of an array reply: a bulk string's range in the reply, a
/// null, or anything else (named by its type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Item {
    Bulk((usize, usize)),
    Null,
    Other(u8),
}

impl Reply {
    /// The bytes of a range of this reply.
    pub fn slice(&self, range: (usize, usize)) -> &[u8] {
        self.bytes.get(range.0..range.1).unwrap_or_default()
    }

    /// The text of an error reply (`-NOPERM ...`), if this is one.
    pub fn error(&self) -> Option<&[u8]> {
        let text = self.bytes.strip_prefix(b"-")?;
        Some(text.strip_suffix(b"\r\n").unwrap_or(text))
    }

    /// A null bulk string or a null array.
    pub fn is_null(&self) -> bool {
        matches!(&self.bytes[..], b"$-1\r\n" | b"*-1\r\n")
    }

    /// The elements of an array reply and how many there are; `None` for
    /// any other reply.
    pub fn items(&self) -> Option<(usize, Items<'_>)> {
        if self.bytes.first() != Some(&b'*') {
            return None;
        }
        let (count, pos) = int_line(&self.bytes, 1).ok()??;
        let count = usize::try_from(count).ok()?;
        Some((
            count,
            Items {
                buf: &self.bytes,
                pos,
                left: count,
            },
        ))
    }
}

/// The elements of an array reply, in order.
pub(super) struct Items<'a> {
    buf: &'a [u8],
    pos: usize,
    left: usize,
}

impl Iterator for Items<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        self.left = self.left.checked_sub(1)?;
        // The reply was checked whole when it arrived.
        let kind = *self.buf.get(self.pos)?;
        if kind == b'$' {
            let (len, start) = int_line(self.buf, self.pos + 1).ok()??;
            if len < 0 {
                self.pos = start;
                return Some(Item::Null);
            }
            let end = start + len as usize;
            self.pos = end + 2;
            return Some(Item::Bulk((start, end)));
        }
        self.pos = skip_reply(self.buf, self.pos, 0).ok()??;
        Some(Item::Other(kind))
    }
}

fn malformed(what: &str) -> PipeError {
    PipeError::Protocol(format!("malformed RESP reply: {what}"))
}

/// The integer of a RESP2 length or integer line whose digits start at
/// `pos`, and where the line ends (after its CRLF). `Ok(None)` when the
/// line is not complete yet.
fn int_line(buf: &[u8], mut pos: usize) -> Result<Option<(i64, usize)>, PipeError> {
    let negative = buf.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let start = pos;
    let mut value: i64 = 0;
    loop {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'\r') => break,
            Some(d @ b'0'..=b'9') => {
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(i64::from(d - b'0')))
                    .ok_or_else(|| malformed("a length out of range"))?;
                pos += 1;
            }
            Some(_) => return Err(malformed("a length that is not a number")),
        }
    }
    if pos == start {
        return Err(malformed("an empty length"));
    }
    match buf.get(pos + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((if negative { -value } else { value }, pos + 2))),
        Some(_) => Err(malformed("a line not ended by CRLF")),
    }
}

/// Arrays nested deeper than this are refused (larder's commands get flat
/// replies; this bounds the recursion whatever arrives).
const MAX_DEPTH: usize = 8;

/// Where the reply starting at `pos` ends, or `Ok(None)` when it is not
/// complete yet.
fn skip_reply(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, PipeError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' => {
            let Some(cr) = buf[pos..].iter().position(|b| *b == b'\r') else {
                return Ok(None);
            };
            match buf.get(pos + cr + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some(pos + cr + 2)),
                Some(_) => Err(malformed("a line not ended by CRLF")),
            }
        }
        b'$' => {
            let Some((len, start)) = int_line(buf, pos + 1)? else {
                return Ok(None);
            };
            if len == -1 {
                return Ok(Some(start));
            }
            let len = usize::try_from(len).map_err(|_| malformed("a negative length"))?;
            let end = start
                .checked_add(len)
                .ok_or_else(|| malformed("a length out of range"))?;
            match buf.get(end..end + 2) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(end + 2)),
                Some(_) => Err(malformed("a bulk string longer than its length")),
            }
        }
        b'*' => {
            if depth >= MAX_DEPTH {
                return Err(malformed("arrays nested too deep"));
            }
            let Some((count, mut at)) = int_line(buf, pos + 1)? else {
                return Ok(None);
            };
            if count == -1 {
                return Ok(Some(at));
            }
            if count < 0 {
                return Err(malformed("a negative array length"));
            }
            for _ in 0..count {
                match skip_reply(buf, at, depth + 1)? {
                    Some(next) => at = next,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        other => Err(malformed(&format!("unknown type byte {other:#04x}"))),
    }
}

/// The length of the complete reply at the start of `buf`, or `Ok(None)`
/// when more bytes are needed.
pub(super) fn reply_len(buf: &[u8]) -> Result<Option<usize>, PipeError> {
    skip_reply(buf, 0, 0)
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
                if let Some(text) = reply.error() {
                    return Err(PipeError::Refused(
                        String::from_utf8_lossy(text).into_owned(),
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
        let Some(used) = reply_len(input)? else {
            return Ok(());
        };
        let bytes = input.split_to(used).freeze();
        let Some(front) = waiting.front_mut() else {
            return Err(PipeError::Protocol(
                "a reply arrived that no command asked for".into(),
            ));
        };
        front.got.push(Reply { bytes });
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bulk(body: &[u8]) -> Vec<u8> {
        let mut out = format!("${}\r\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// RESP2 replies of every type, arrays nested up to three deep.
    fn reply() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            "[a-zA-Z ]{0,8}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            "[A-Z]{1,6} [a-z ]{0,8}".prop_map(|s| format!("-{s}\r\n").into_bytes()),
            any::<i64>().prop_map(|i| format!(":{i}\r\n").into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| bulk(&b)),
            Just(b"$-1\r\n".to_vec()),
            Just(b"*-1\r\n".to_vec()),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            proptest::collection::vec(inner, 0..6).prop_map(|items| {
                let mut out = format!("*{}\r\n", items.len()).into_bytes();
                for item in items {
                    out.extend(item);
                }
                out
            })
        })
    }

    #[test]
    fn errors_nulls_and_malformed_replies() {
        let error = Reply {
            bytes: Bytes::from_static(b"-NOPERM no\r\n"),
        };
        assert_eq!(error.error(), Some(&b"NOPERM no"[..]));
        assert!(error.items().is_none());
        for null in [&b"$-1\r\n"[..], b"*-1\r\n"] {
            assert!(
                Reply {
                    bytes: Bytes::from_static(null)
                }
                .is_null()
            );
        }
        for bad in [
            &b"?x\r\n"[..],
            b"$x\r\n",
            b"$-\r\n",
            b"$2\r\nabc\r\n",
            b"+ok\rx",
            b"*-2\r\n",
            b"$99999999999999999999\r\n",
        ] {
            assert!(reply_len(bad).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(reply_len(deep.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn a_reply_ends_where_it_ends(
            reply in reply(),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let mut buf = reply.clone();
            buf.extend(&tail);
            prop_assert_eq!(reply_len(&buf).unwrap(), Some(reply.len()));
            for cut in 0..reply.len() {
                prop_assert_eq!(reply_len(&reply[..cut]).unwrap(), None);
            }
        }

        #[test]
        fn array_items_are_what_redis_rs_reads(reply in reply()) {
            let value = redis::parse_redis_value(&reply).unwrap();
            let reply = Reply { bytes: Bytes::from(reply) };
            match (reply.items(), value) {
                (Some((count, items)), redis::Value::Array(values)) => {
                    prop_assert_eq!(count, values.len());
                    let items: Vec<Item> = items.collect();
                    prop_assert_eq!(items.len(), values.len());
                    for (item, value) in items.into_iter().zip(values) {
                        match (item, value) {
                            (Item::Bulk(r), redis::Value::BulkString(b)) => {
                                prop_assert_eq!(reply.slice(r), &b[..]);
                            }
                            (Item::Null, redis::Value::Nil) => {}
                            (Item::Other(kind), value) => prop_assert!(
                                !matches!(value, redis::Value::BulkString(_)) && kind != b'$',
                                "{:?}", value
                            ),
                            (item, value) => prop_assert!(false, "{:?} against {:?}", item, value),
                        }
                    }
                }
                (None, value) => prop_assert!(
                    !matches!(value, redis::Value::Array(_)),
                    "an array read as no array: {:?}", value
                ),
                (Some(_), value) => prop_assert!(false, "read as an array: {:?}", value),
            }
        }

        #[test]
        fn any_bytes_are_a_reply_an_error_or_not_enough(
            bytes in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            if let Ok(Some(len)) = reply_len(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }
    }
}
