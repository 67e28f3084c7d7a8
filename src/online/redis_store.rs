//! Redis back end, standalone or cluster.
//!
//! Standalone: a small fixed set of multiplexed connections, each a
//! `ConnectionManager` that reconnects by itself. Requests are spread over
//! them round-robin and every request is one pipeline, so a request costs
//! exactly one round trip. (A checkout pool such as deadpool-redis sends a
//! PING on every checkout, which doubles the round trips of a read.)
//!
//! Cluster: the cluster connection routes each command to the node that
//! owns its key's slot. A pipeline may not span slots, so a read sends its
//! per-key commands concurrently; they are multiplexed per node and leave in
//! one write per node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

use super::layout::KeyVersion;
use super::redis_pipe::{self, Item, Pipe, PipeError, Reply};
use super::{KeyRead, ReadResult, RowWrite, StoreError};

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, for a standalone server.
    pub url: String,
    /// Seed nodes of a Redis Cluster; when set, `url` is not used.
    pub cluster_nodes: Vec<String>,
    /// Multiplexed connections to a standalone server.
    pub connections: usize,
    /// How long one Redis round trip may take before the request fails with
    /// UNAVAILABLE.
    pub timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    pub entity_key_serialization_version: KeyVersion,
    /// Expire whole entity keys this long after their last write (Feast's
    /// `key_ttl_seconds`); zero keeps them forever.
    pub key_ttl: Duration,
    /// How reads fetch a key's fields.
    pub read_command: ReadCommand,
    /// A Redis ACL user and its password (`AUTH username password`), in
    /// place of any in `url`: a namespace's own credentials.
    pub credentials: Option<RedisCredentials>,
}

/// A Redis ACL user. The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RedisCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// HMGET asks for the wanted fields; HGETALL fetches the whole hash and
/// larder picks them out. HMGET looks each field up, which in a small hash
/// that Redis keeps as a listpack means scanning it once per field, and in
/// a hash table costs a lookup per field; HGETALL walks the hash once.
/// `Auto`, the default, uses HGETALL for a key when the read wants at
/// least half of the fields the definitions store under it, HMGET
/// otherwise (measured in docs/PERFORMANCE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadCommand {
    #[default]
    Auto,
    Hmget,
    Hgetall,
}

impl ReadCommand {
    /// The command for one read: `Hmget` or `Hgetall`.
    fn for_read(self, read: &KeyRead<'_>) -> ReadCommand {
        match self {
            ReadCommand::Auto
                if read.stored_fields > 0 && read.fields.len() * 2 >= read.stored_fields =>
            {
                ReadCommand::Hgetall
            }
            ReadCommand::Auto => ReadCommand::Hmget,
            fixed => fixed,
        }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            connections: 4,
            timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(1000),
            entity_key_serialization_version: KeyVersion::V3,
            key_ttl: Duration::ZERO,
            read_command: ReadCommand::Auto,
            credentials: None,
        }
    }
}

// One per store, made once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Standalone {
        /// For writes and scripts.
        client: redis::Client,
        connections: Vec<OnceCell<ConnectionManager>>,
        next: AtomicUsize,
        /// For reads: the same server, with larder's own reply reader.
        info: redis::ConnectionInfo,
        pipes: Vec<tokio::sync::Mutex<Option<Pipe>>>,
    },
    Cluster {
        client: ClusterClient,
        connection: OnceCell<ClusterConnection>,
    },
}

/// Feast-layout feature storage in Redis.
pub struct RedisStore {
    backend: Backend,
    settings: Arc<RedisSettings>,
    write_one: redis::Script,
    write_many: redis::Script,
    /// WRITE_MANY's source, loaded ahead of the calls of a pipeline.
    write_many_code: String,
}

/// Lua shared by the write scripts: decoding a stored Timestamp message
/// (two varint fields), so that Feast's own `_ts` values compare correctly,
/// and the newer-only write of one view's row under one key.
const WRITE_PRELUDE: &str = r#"
local function varint(s, pos)
  local result, scale = 0, 1
  while true do
    local b = string.byte(s, pos)
    if b == nil then return nil, pos end
    result = result + (b % 128) * scale
    pos = pos + 1
    if b < 128 then return result, pos end
    scale = scale * 128
  end
end
local function decode_ts(s)
  local secs, nanos, pos = 0, 0, 1
  while pos <= #s do
    local tag = string.byte(s, pos)
    local v
    v, pos = varint(s, pos + 1)
    if v == nil then return nil end
    if tag == 8 then
      if v >= 9223372036854775808 then v = v - 18446744073709551616 end
      secs = v
    elseif tag == 16 then nanos = v
    else return nil end
  end
  return secs, nanos
end
local function write_one(key, ts_field, ts, secs, nanos, ttl, first, last)
  local cur = redis.call('HGET', key, ts_field)
  if cur then
    local cs, cn = decode_ts(cur)
    if cs ~= nil and (secs < cs or (secs == cs and nanos <= cn)) then return 0 end
  end
  redis.call('HSET', key, ts_field, ts, unpack(ARGV, first, last))
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
  return 1
end
"#;

/// One row under one key (cluster mode, where a script's keys must share a
/// slot). KEYS[1] the entity key; ARGV[1] the `_ts:<view>` field; ARGV[2]
/// the serialized Timestamp; ARGV[3], ARGV[4] its seconds and nanos;
/// ARGV[5] the key TTL in seconds (0: none); ARGV[6..] field, value pairs.
const WRITE_ONE: &str = r#"
return write_one(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), 6, #ARGV)
"#;

/// Many rows, one per key in KEYS (standalone): one script call spreads its
/// fixed cost over the rows. ARGV[1] the key TTL; then per key: `_ts`
/// field, serialized Timestamp, seconds, nanos, the number of fields N,
/// and N field, value pairs. Returns how many rows were written.
const WRITE_MANY: &str = r#"
local ttl = tonumber(ARGV[1])
local pos, written = 2, 0
for k = 1, #KEYS do
  local first = pos + 5
  local last = first + 2 * tonumber(ARGV[pos + 4]) - 1
  written = written + write_one(KEYS[k], ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2]),
    tonumber(ARGV[pos + 3]), ttl, first, last)
  pos = last + 1
end
return written
"#;

/// Rows per WRITE_MANY call.
const ROWS_PER_SCRIPT_CALL: usize = 64;

/// Appends one RESP bulk string.
fn put_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// The read pipeline as RESP bytes. The keys of a request share their
/// field list, so the fields are encoded once and copied after each key.
fn pack_reads(reads: &[KeyRead<'_>], command: ReadCommand) -> Vec<u8> {
    let mut out = Vec::with_capacity(reads.len() * 64);
    let mut fields: Vec<u8> = Vec::new();
    let mut fields_of: Option<&[&[u8]]> = None;
    for r in reads {
        match command.for_read(r) {
            ReadCommand::Hmget | ReadCommand::Auto => {
                if fields_of != Some(r.fields.as_slice()) {
                    fields.clear();
                    for f in &r.fields {
                        put_bulk(&mut fields, f);
                    }
                    fields_of = Some(r.fields.as_slice());
                }
                out.push(b'*');
                out.extend_from_slice(itoa::Buffer::new().format(2 + r.fields.len()).as_bytes());
                out.extend_from_slice(b"\r\n$5\r\nHMGET\r\n");
                put_bulk(&mut out, &r.key);
                out.extend_from_slice(&fields);
            }
            ReadCommand::Hgetall => {
                out.extend_from_slice(b"*2\r\n$7\r\nHGETALL\r\n");
                put_bulk(&mut out, &r.key);
            }
        }
    }
    out
}

/// A Redis error reply (`-NOPERM ...`, `-WRONGPASS ...`) as a store error.
fn classify_text(text: &str) -> StoreError {
    if text.contains("NOPERM") {
        StoreError::Denied(format!(
            "the Redis ACL user refused access (NOPERM): {text}"
        ))
    } else if text.starts_with("WRONGPASS") || text.starts_with("NOAUTH") {
        StoreError::Denied(format!("Redis refused larder's credentials: {text}"))
    } else {
        StoreError::Failed(format!("Redis answered an error: {text}"))
    }
}

fn pipe_error(e: PipeError) -> StoreError {
    match e {
        PipeError::Refused(text) => classify_text(&text),
        PipeError::Io(_) => StoreError::Unavailable(e.to_string()),
        PipeError::Protocol(_) => StoreError::Failed(e.to_string()),
    }
}

/// Records one read's reply in `out`: where each requested field's bytes
/// sit in the reply, for an HMGET reply (one entry per field) or an
/// HGETALL reply (field/value pairs).
fn place_reply(
    out: &mut ReadResult,
    read: &KeyRead<'_>,
    reply: Reply,
    command: ReadCommand,
) -> Result<(), StoreError> {
    let bad = |what: u8| {
        StoreError::Failed(format!(
            "unexpected Redis reply for a hash field: a RESP element of type {:?}",
            char::from(what)
        ))
    };
    let cell = |item: Item| match item {
        Item::Bulk(r) => Ok(Some(r)),
        Item::Null => Ok(None),
        Item::Other(kind) => Err(bad(kind)),
    };
    if let Some(text) = reply.error() {
        return Err(classify_text(&String::from_utf8_lossy(text)));
    }
    if reply.is_null() {
        for _ in &read.fields {
            out.push_cell(u32::MAX, None);
        }
        out.end_key();
        return Ok(());
    }
    let Some((count, items)) = reply.items() else {
        return Err(bad(reply.bytes.first().copied().unwrap_or(b'?')));
    };
    if command.for_read(read) != ReadCommand::Hgetall {
        if count != read.fields.len() {
            return Err(StoreError::Failed(format!(
                "HMGET answered {count} values for {} fields",
                read.fields.len()
            )));
        }
        // On an error the caller drops `out` whole.
        let chunk = out.push_chunk(reply.bytes.clone());
        for item in items {
            out.push_cell(chunk, cell(item)?);
        }
    } else {
        let mut cells = vec![None; read.fields.len()];
        // A listpack answers in the order the fields were written, which
        // is usually the order they are asked for: try the field after the
        // last one found before searching them all.
        let mut next = 0;
        let mut items = items;
        while let (Some(field), Some(value)) = (items.next(), items.next()) {
            let Item::Bulk(f) = field else {
                continue;
            };
            let name = reply.slice(f);
            let found = if read.fields.get(next).is_some_and(|x| *x == name) {
                Some(next)
            } else {
                read.fields.iter().position(|x| *x == name)
            };
            if let Some(i) = found {
                cells[i] = cell(value)?;
                next = i + 1;
            }
        }
        let chunk = out.push_chunk(reply.bytes.clone());
        for c in cells {
            out.push_cell(chunk, c);
        }
    }
    out.end_key();
    Ok(())
}

fn classify(e: redis::RedisError) -> StoreError {
    // NOPERM comes as the reply's code, or inside the error of a script
    // whose Redis calls the ACL refused.
    let text = e.to_string();
    if e.code() == Some("NOPERM")
        || text.contains("NOPERM")
        || text.contains("NoPerm")
        || text.contains("user executing the script can't access")
    {
        StoreError::Denied(format!("the Redis ACL user refused access (NOPERM): {e}"))
    } else if e.code() == Some("WRONGPASS") || text.contains("WRONGPASS") {
        StoreError::Denied(format!("Redis refused larder's credentials: {e}"))
    } else if e.is_timeout() {
        StoreError::Unavailable(format!("Redis timed out: {e}"))
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(format!("Redis unreachable: {e}"))
    } else {
        StoreError::Failed(e.to_string())
    }
}

/// TCP settings for Redis connections: redis-rs leaves Nagle's algorithm on,
/// which holds a small pipelined command back while an earlier one is
/// unacknowledged.
fn no_delay() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

fn bulk(v: redis::Value) -> Result<Option<Vec<u8>>, StoreError> {
    match v {
        redis::Value::BulkString(b) => Ok(Some(b)),
        redis::Value::Nil => Ok(None),
        other => Err(StoreError::Failed(format!(
            "unexpected Redis reply for a hash field: {other:?}"
        ))),
    }
}

/// The requested fields, in order, from an HMGET reply (one entry per
/// field) or an HGETALL reply (field/value pairs, RESP2 or RESP3).
fn pick_fields(
    read: &KeyRead<'_>,
    reply: redis::Value,
    command: ReadCommand,
) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    let mut out = vec![None; read.fields.len()];
    let mut place = |field: redis::Value, value: redis::Value| -> Result<(), StoreError> {
        if let redis::Value::BulkString(f) = field
            && let Some(i) = read.fields.iter().position(|x| *x == f.as_slice())
        {
            out[i] = bulk(value)?;
        }
        Ok(())
    };
    match reply {
        redis::Value::Array(items) if command.for_read(read) != ReadCommand::Hgetall => {
            if items.len() != read.fields.len() {
                return Err(StoreError::Failed(format!(
                    "HMGET answered {} values for {} fields",
                    items.len(),
                    read.fields.len()
                )));
            }
            for (slot, item) in out.iter_mut().zip(items) {
                *slot = bulk(item)?;
            }
        }
        redis::Value::Array(items) => {
            let mut items = items.into_iter();
            while let (Some(f), Some(v)) = (items.next(), items.next()) {
                place(f, v)?;
            }
        }
        redis::Value::Map(pairs) => {
            for (f, v) in pairs {
                place(f, v)?;
            }
        }
        redis::Value::Nil => {}
        other => {
            return Err(StoreError::Failed(format!(
                "unexpected Redis reply to a read: {other:?}"
            )));
        }
    }
    Ok(out)
}

impl RedisStore {
    /// Prepares the store; connections are made on first use and remade
    /// whenever they break, so Redis may start after larder.
    pub fn new(settings: RedisSettings) -> Result<Self, StoreError> {
        let backend = if settings.cluster_nodes.is_empty() {
            let info = settings
                .url
                .as_str()
                .into_connection_info()
                .map_err(|e| StoreError::Failed(format!("invalid Redis url: {e}")))?
                .set_tcp_settings(no_delay());
            let info = match &settings.credentials {
                Some(c) => {
                    let redis = info
                        .redis_settings()
                        .clone()
                        .set_username(&c.username)
                        .set_password(&c.password);
                    info.set_redis_settings(redis)
                }
                None => info,
            };
            let client = redis::Client::open(info.clone())
                .map_err(|e| StoreError::Failed(format!("invalid Redis url: {e}")))?;
            if !matches!(
                info.addr(),
                redis::ConnectionAddr::Tcp(..) | redis::ConnectionAddr::Unix(_)
            ) {
                return Err(StoreError::Failed(
                    "invalid Redis url: only redis:// and unix:// addresses are supported".into(),
                ));
            }
            let n = settings.connections.max(1);
            Backend::Standalone {
                client,
                connections: (0..n).map(|_| OnceCell::new()).collect(),
                next: AtomicUsize::new(0),
                info,
                pipes: (0..n).map(|_| tokio::sync::Mutex::new(None)).collect(),
            }
        } else {
            let mut builder = ClusterClient::builder(settings.cluster_nodes.clone());
            if let Some(c) = &settings.credentials {
                builder = builder.username(&c.username).password(&c.password);
            }
            let client = builder
                .tcp_settings(no_delay())
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.timeout)
                .build()
                .map_err(|e| StoreError::Failed(format!("invalid Redis cluster nodes: {e}")))?;
            Backend::Cluster {
                client,
                connection: OnceCell::new(),
            }
        };
        Ok(RedisStore {
            backend,
            settings: Arc::new(settings),
            write_one: redis::Script::new(&format!("{WRITE_PRELUDE}{WRITE_ONE}")),
            write_many: redis::Script::new(&format!("{WRITE_PRELUDE}{WRITE_MANY}")),
            write_many_code: format!("{WRITE_PRELUDE}{WRITE_MANY}"),
        })
    }

    pub fn key_version(&self) -> KeyVersion {
        self.settings.entity_key_serialization_version
    }

    fn read_command(&self, r: &KeyRead<'_>) -> redis::Cmd {
        match self.settings.read_command.for_read(r) {
            ReadCommand::Hmget | ReadCommand::Auto => {
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&r.key).arg(&r.fields);
                cmd
            }
            ReadCommand::Hgetall => {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(&r.key);
                cmd
            }
        }
    }

    async fn standalone(&self) -> Result<ConnectionManager, StoreError> {
        let Backend::Standalone {
            client,
            connections,
            next,
            ..
        } = &self.backend
        else {
            unreachable!("standalone() is only called in standalone mode")
        };
        let slot = next.fetch_add(1, Ordering::Relaxed) % connections.len();
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.settings.timeout))
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_number_of_retries(1);
        connections[slot]
            .get_or_try_init(|| ConnectionManager::new_with_config(client.clone(), config))
            .await
            .cloned()
            .map_err(classify)
    }

    async fn cluster(&self) -> Result<ClusterConnection, StoreError> {
        let Backend::Cluster { client, connection } = &self.backend else {
            unreachable!("cluster() is only called in cluster mode")
        };
        connection
            .get_or_try_init(|| client.get_async_connection())
            .await
            .cloned()
            .map_err(classify)
    }

    /// A live read connection, made (again) when there is none, and whether
    /// it was made just now.
    async fn pipe(&self) -> Result<(Pipe, bool), StoreError> {
        let Backend::Standalone {
            info, pipes, next, ..
        } = &self.backend
        else {
            unreachable!("pipe() is only called in standalone mode")
        };
        let slot = &pipes[next.fetch_add(1, Ordering::Relaxed) % pipes.len()];
        let mut held = slot.lock().await;
        if let Some(pipe) = held.as_ref().filter(|p| !p.is_closed()) {
            return Ok((pipe.clone(), false));
        }
        let pipe = redis_pipe::connect_within(info, self.settings.connect_timeout)
            .await
            .map_err(pipe_error)?;
        *held = Some(pipe.clone());
        Ok((pipe, true))
    }

    /// How long one read may take (it then fails with a timeout).
    pub fn read_timeout(&self) -> Duration {
        self.settings.timeout
    }

    pub async fn read(&self, reads: &[KeyRead<'_>]) -> Result<ReadResult, StoreError> {
        if reads.is_empty() {
            return Ok(ReadResult::default());
        }
        let within = self.settings.timeout;
        let command = self.settings.read_command;
        let work = async {
            match &self.backend {
                Backend::Standalone { .. } => {
                    let (pipe, fresh) = self.pipe().await?;
                    let packed = pack_reads(reads, command);
                    let replies = match pipe.send(packed, reads.len()).await {
                        // The connection ended under this read: Redis
                        // restarted, failed over or closed it. A read can
                        // be repeated, so it is, once, on a new connection
                        // (packed again: rare enough not to keep a copy).
                        Err(PipeError::Io(_)) if !fresh => {
                            let (pipe, _) = self.pipe().await?;
                            pipe.send(pack_reads(reads, command), reads.len()).await
                        }
                        sent => sent,
                    }
                    .map_err(pipe_error)?;
                    if replies.len() != reads.len() {
                        return Err(StoreError::Failed(format!(
                            "Redis answered {} replies for {} reads",
                            replies.len(),
                            reads.len()
                        )));
                    }
                    let width = reads.first().map_or(0, |r| r.fields.len());
                    let mut out = ReadResult::with_capacity(reads.len(), width);
                    for (r, reply) in reads.iter().zip(replies) {
                        place_reply(&mut out, r, reply, command)?;
                    }
                    Ok(out)
                }
                Backend::Cluster { .. } => {
                    let conn = self.cluster().await?;
                    let calls = reads.iter().map(|r| {
                        let mut conn = conn.clone();
                        let cmd = self.read_command(r);
                        async move { cmd.query_async::<redis::Value>(&mut conn).await }
                    });
                    let replies = futures::future::try_join_all(calls)
                        .await
                        .map_err(classify)?;
                    reads
                        .iter()
                        .zip(replies)
                        .map(|(r, reply)| pick_fields(r, reply, command))
                        .collect()
                }
            }
        };
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| StoreError::Timeout(within))?
    }

    pub async fn write(&self, rows: &[RowWrite]) -> Result<usize, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let ttl = self.settings.key_ttl.as_secs();
        match &self.backend {
            Backend::Standalone { .. } => {
                let mut conn = self.standalone().await?;
                let mut pipe = redis::pipe();
                // Loading first makes the EVALSHAs of the same pipeline
                // succeed on a server that has never seen the script.
                pipe.cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(&self.write_many_code)
                    .ignore();
                for chunk in rows.chunks(ROWS_PER_SCRIPT_CALL) {
                    let mut inv = self.write_many.prepare_invoke();
                    inv.arg(ttl);
                    for row in chunk {
                        inv.key(&row.key)
                            .arg(&row.ts_field)
                            .arg(super::codec::encode_timestamp(row.event_time))
                            .arg(row.event_time.seconds)
                            .arg(row.event_time.nanos)
                            .arg(row.fields.len());
                        for (field, value) in &row.fields {
                            inv.arg(field).arg(value);
                        }
                    }
                    pipe.invoke_script(&inv);
                }
                let written: Vec<i64> = match pipe.query_async(&mut conn).await {
                    // The connection ended under the write (Redis
                    // restarted, failed over or closed it). The scripts
                    // write newer-only and an equal time is not newer, so
                    // sending them again can neither undo nor repeat a
                    // write: once more, on the same manager, which is
                    // reconnecting by now. Rows the first attempt wrote
                    // then count as not written.
                    Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                        pipe.query_async(&mut conn).await
                    }
                    sent => sent,
                }
                .map_err(classify)?;
                Ok(written.into_iter().sum::<i64>() as usize)
            }
            Backend::Cluster { .. } => {
                let conn = self.cluster().await?;
                let calls = rows.iter().map(|row| {
                    let mut conn = conn.clone();
                    let mut inv = self.write_one.prepare_invoke();
                    inv.key(&row.key)
                        .arg(&row.ts_field)
                        .arg(super::codec::encode_timestamp(row.event_time))
                        .arg(row.event_time.seconds)
                        .arg(row.event_time.nanos)
                        .arg(ttl);
                    for (field, value) in &row.fields {
                        inv.arg(field).arg(value);
                    }
                    async move { inv.invoke_async::<i64>(&mut conn).await }
                });
                let written = futures::future::try_join_all(calls)
                    .await
                    .map_err(classify)?;
                Ok(written.into_iter().filter(|w| *w == 1).count())
            }
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let within = self.settings.timeout;
        let work = async {
            let ping = redis::cmd("PING");
            match &self.backend {
                // Readiness follows the connections reads use.
                Backend::Standalone { .. } => {
                    let reply = self
                        .pipe()
                        .await?
                        .0
                        .send(ping.get_packed_command(), 1)
                        .await
                        .map_err(pipe_error)?;
                    match reply.first().map(|r| r.error()) {
                        Some(Some(text)) => Err(classify_text(&String::from_utf8_lossy(text))),
                        Some(None) => Ok(()),
                        None => Err(StoreError::Failed("Redis did not answer PING".into())),
                    }
                }
                Backend::Cluster { .. } => ping
                    .query_async::<String>(&mut self.cluster().await?)
                    .await
                    .map(|_| ())
                    .map_err(classify),
            }
        };
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| StoreError::Timeout(within))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_reads_match_the_redis_crates_encoding() {
        let (a, b, c) = (
            b"f1".as_slice(),
            b"_ts:v".as_slice(),
            b"\x00\xff".as_slice(),
        );
        let reads = [
            KeyRead {
                key: b"k1".to_vec(),
                fields: vec![a, b],
                stored_fields: 0,
            },
            KeyRead {
                key: b"key\r\n2".to_vec(),
                fields: vec![a, b],
                stored_fields: 3,
            },
            KeyRead {
                key: Vec::new(),
                fields: vec![c],
                stored_fields: 0,
            },
        ];
        for command in [ReadCommand::Hmget, ReadCommand::Hgetall, ReadCommand::Auto] {
            let mut pipe = redis::pipe();
            for (i, r) in reads.iter().enumerate() {
                // Auto: the second read wants 2 of the 3 fields stored
                // under its key; the others do not know how many there are.
                let whole =
                    command == ReadCommand::Hgetall || (command == ReadCommand::Auto && i == 1);
                if whole {
                    pipe.cmd("HGETALL").arg(&r.key);
                } else {
                    pipe.cmd("HMGET").arg(&r.key).arg(&r.fields);
                }
            }
            assert_eq!(pack_reads(&reads, command), pipe.get_packed_pipeline());
        }
    }

    #[test]
    fn auto_fetches_whole_hashes_only_when_most_of_the_hash_is_wanted() {
        let f = [b"f".as_slice(); 100];
        let read = |wanted: usize, stored: usize| KeyRead {
            key: Vec::new(),
            fields: f[..wanted].to_vec(),
            stored_fields: stored,
        };
        let auto = |r: &KeyRead<'_>| ReadCommand::Auto.for_read(r);
        assert_eq!(auto(&read(55, 55)), ReadCommand::Hgetall);
        assert_eq!(auto(&read(28, 55)), ReadCommand::Hgetall);
        assert_eq!(auto(&read(11, 55)), ReadCommand::Hmget);
        assert_eq!(auto(&read(5, 0)), ReadCommand::Hmget, "unknown size");
        assert_eq!(auto(&read(100, 200)), ReadCommand::Hgetall, "a hash table");
        assert_eq!(auto(&read(99, 200)), ReadCommand::Hmget);
        assert_eq!(
            ReadCommand::Hmget.for_read(&read(55, 55)),
            ReadCommand::Hmget
        );
        assert_eq!(
            ReadCommand::Hgetall.for_read(&read(1, 55)),
            ReadCommand::Hgetall
        );
    }
}
