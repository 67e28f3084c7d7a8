//! One system call per burst of response writes.
//!
//! The `h2` crate writes a DATA frame of more than 256 bytes straight from
//! the frame and flushes before it queues the next frame, so a gRPC
//! response (HEADERS and DATA, then the trailers) left in two `writev`s.
//! A client woke for the first, found no trailers, slept, and was woken
//! again by the second: one more hand-off between processes on every
//! request's path, and a preemption of the server between the two writes.
//!
//! [`Coalesced`] copies small writes into a buffer of its own. The first
//! flush after new data is put off: the connection's task is woken, and
//! the buffer goes out at the next call on the connection (a second flush,
//! a read, a write that does not fit, or shutdown), which the woken task
//! makes at the latest. So what one poll of a connection produces leaves
//! in one write. A write that does not fit in the buffer goes out at once,
//! in one vectored call with what is buffered before it.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes held back, and the buffer's largest size. A gRPC
/// response of 1 x 50 is a few KiB; a larger write goes out as it comes.
pub const GATHER_LIMIT: usize = 16 * 1024;

/// A connection whose small writes are gathered (see the module docs).
pub struct Coalesced<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    sent: usize,
    /// A flush of what is in `buf` was put off; the next one writes.
    deferred: bool,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Self {
        Coalesced {
            inner,
            buf: Vec::new(),
            sent: 0,
            deferred: false,
        }
    }

    #[cfg(test)]
    fn get_ref(&self) -> &S {
        &self.inner
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Everything buffered has been written.
    fn written_all(&mut self) {
        self.buf.clear();
        self.sent = 0;
        self.deferred = false;
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.written_all();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // What a put-off flush held back leaves before the connection waits
        // for more input. A socket that is full keeps it until it is
        // writable again, and the read goes on.
        if this.pending() > 0
            && let Poll::Ready(Err(e)) = this.poll_drain(cx)
        {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.pending() + total <= GATHER_LIMIT {
            // After a partial write, what is left moves to the front, so
            // the buffer never holds more than the limit.
            if this.sent > 0 {
                this.buf.drain(..this.sent);
                this.sent = 0;
            }
            for b in bufs {
                this.buf.extend_from_slice(b);
            }
            return Poll::Ready(Ok(total));
        }
        if this.pending() == 0 {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        // Too large to gather: what is buffered goes first, in the same
        // call. `Pending` is only returned before any of `bufs` is written.
        loop {
            let held = this.pending();
            let mut slices = Vec::with_capacity(bufs.len() + 1);
            slices.push(IoSlice::new(&this.buf[this.sent..]));
            slices.extend(bufs.iter().map(|b| IoSlice::new(b)));
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < held {
                this.sent += n;
                continue;
            }
            this.written_all();
            if n > held {
                return Poll::Ready(Ok(n - held));
            }
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() > 0 {
            if !this.deferred {
                // Put off once: more of this poll's output may follow. The
                // woken task's next call on the connection writes it.
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_drain(cx))?;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// A listener whose connections gather their writes ([`Coalesced`]).
pub struct CoalescingListener<L>(pub L);

impl<L> axum::serve::Listener for CoalescingListener<L>
where
    L: axum::serve::Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = Coalesced<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (Coalesced::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// A connection that records each write call, accepts at most
    /// `accept` bytes per call, and refuses every `block_every`-th call
    /// (none when 0; 1 would refuse all) with `Pending`, waking at once as
    /// a socket that drained would.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        accept: usize,
        block_every: usize,
        calls: usize,
        input: Vec<u8>,
    }

    impl Recorder {
        fn new() -> Self {
            Recorder {
                accept: usize::MAX,
                ..Default::default()
            }
        }
        fn written(&self) -> Vec<u8> {
            self.writes.concat()
        }
        fn refuse(&mut self, cx: &mut Context<'_>) -> bool {
            self.calls += 1;
            if self.block_every > 0 && self.calls.is_multiple_of(self.block_every) {
                cx.waker().wake_by_ref();
                return true;
            }
            false
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(data)])
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.refuse(cx) {
                return Poll::Pending;
            }
            let mut call = Vec::new();
            for b in bufs {
                let room = this.accept - call.len();
                call.extend_from_slice(&b[..b.len().min(room)]);
            }
            let n = call.len();
            this.writes.push(call);
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Recorder {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let n = this.input.len().min(out.remaining());
            out.put_slice(&this.input[..n]);
            this.input.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn context() -> (Arc<CountWakes>, Waker) {
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        (wakes.clone(), Waker::from(wakes))
    }

    fn write(c: &mut Coalesced<Recorder>, cx: &mut Context<'_>, data: &[u8]) {
        let mut at = 0;
        while at < data.len() {
            if let Poll::Ready(n) = Pin::new(&mut *c).poll_write(cx, &data[at..]) {
                at += n.unwrap();
            }
        }
    }

    fn flush(c: &mut Coalesced<Recorder>, cx: &mut Context<'_>) {
        while Pin::new(&mut *c)
            .poll_flush(cx)
            .map(Result::unwrap)
            .is_pending()
        {}
    }

    fn read(c: &mut Coalesced<Recorder>, cx: &mut Context<'_>) -> Vec<u8> {
        let mut space = [0u8; 64];
        let mut out = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut *c).poll_read(cx, &mut out).is_ready());
        out.filled().to_vec()
    }

    #[test]
    fn a_response_flushed_twice_leaves_in_one_write() {
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder::new());
        // h2's order: HEADERS and DATA, a flush, the trailers, a flush.
        write(&mut c, &mut cx, b"headers+data");
        flush(&mut c, &mut cx);
        assert!(c.get_ref().writes.is_empty(), "the first flush is put off");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "and wakes the task");
        write(&mut c, &mut cx, b"trailers");
        flush(&mut c, &mut cx);
        assert_eq!(c.get_ref().writes, vec![b"headers+datatrailers".to_vec()]);
    }

    #[test]
    fn a_put_off_flush_is_written_by_the_next_read() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut inner = Recorder::new();
        inner.input = b"next request".to_vec();
        let mut c = Coalesced::new(inner);
        write(&mut c, &mut cx, b"response");
        flush(&mut c, &mut cx);
        assert!(c.get_ref().writes.is_empty());
        assert_eq!(read(&mut c, &mut cx), b"next request");
        assert_eq!(c.get_ref().writes, vec![b"response".to_vec()]);
        // Nothing is left over for a later flush.
        flush(&mut c, &mut cx);
        assert_eq!(c.get_ref().writes.len(), 1);
    }

    #[test]
    fn shutdown_writes_what_is_held() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder::new());
        write(&mut c, &mut cx, b"last words");
        flush(&mut c, &mut cx);
        while Pin::new(&mut c).poll_shutdown(&mut cx).is_pending() {}
        assert_eq!(c.get_ref().written(), b"last words");
    }

    #[test]
    fn a_large_write_goes_out_at_once_behind_what_is_held() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut c = Coalesced::new(Recorder::new());
        write(&mut c, &mut cx, b"headers");
        let big = vec![7u8; GATHER_LIMIT];
        write(&mut c, &mut cx, &big);
        let mut expected = b"headers".to_vec();
        expected.extend_from_slice(&big);
        assert_eq!(c.get_ref().writes, vec![expected], "one vectored call");
        assert_eq!(c.pending(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(Vec<u8>),
        Flush,
        Read,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Op::Write),
            1 => proptest::collection::vec(any::<u8>(), GATHER_LIMIT - 64..GATHER_LIMIT + 64)
                .prop_map(Op::Write),
            2 => Just(Op::Flush),
            1 => Just(Op::Read),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the order of writes, flushes and reads, and however
        /// little the connection takes per call, the bytes arrive whole and
        /// in order, and none is held back once flushed twice.
        #[test]
        fn bytes_arrive_whole_and_in_order(
            ops in proptest::collection::vec(op(), 0..40),
            accept in 64usize..4096,
            block_every in prop_oneof![Just(0usize), 2usize..5],
        ) {
            let (_, waker) = context();
            let mut cx = Context::from_waker(&waker);
            let mut inner = Recorder::new();
            inner.accept = accept;
            inner.block_every = block_every;
            let mut c = Coalesced::new(inner);
            let mut sent = Vec::new();
            for op in ops {
                match op {
                    Op::Write(data) => {
                        write(&mut c, &mut cx, &data);
                        sent.extend_from_slice(&data);
                    }
                    Op::Flush => flush(&mut c, &mut cx),
                    Op::Read => { read(&mut c, &mut cx); }
                }
                prop_assert!(c.buf.len() <= GATHER_LIMIT);
            }
            flush(&mut c, &mut cx);
            flush(&mut c, &mut cx);
            prop_assert_eq!(c.get_ref().written(), sent);
        }
    }
}
