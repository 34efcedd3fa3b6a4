//! Zero-copy file bodies: a file's bytes go from the page cache to the
//! client's socket with `sendfile`, never through Omega's memory, as nginx
//! sends them.
//!
//! hyper writes a response body from the `Bytes` chunks it is given, and
//! with its writev strategy it hands those very buffers to the connection's
//! stream. A file body made here yields, for each span of the file, a slice
//! of [`MARKER`] (a static region that is never read) as long as the span,
//! and queues the span on its connection's [`ZeroCopy`]; the connection's
//! [`ZeroCopyStream`], handed a buffer that points into `MARKER`, sends the
//! span's bytes with `sendfile` instead.
//!
//! **Invariant:** this holds only while body buffers reach the stream as
//! they are: HTTP/1 with `http1::Builder::writev(true)` (the listener sets
//! it; hyper is pinned to the version whose queue strategy is known), and
//! no layer that reads or transforms response bodies. A marker and its span
//! must agree in length, or the connection fails rather than send a wrong
//! byte. Only the listener makes a `ZeroCopy`; a request without one (a
//! test calling the router, a future TLS listener) gets the bytes read.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use axum::body::{Body, Bytes};
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The most bytes one span (and one body chunk) covers.
pub const SPAN_MAX: usize = 2 << 20;

/// Stands for file bytes in body chunks. Zero-initialised and never read,
/// so it takes address space, not memory.
static MARKER: [u8; SPAN_MAX] = [0; SPAN_MAX];

/// Bytes of a file still to be sent.
#[derive(Debug)]
struct Span {
    file: Arc<File>,
    offset: u64,
    remaining: usize,
}

/// One connection's spans to send, in body order.
#[derive(Debug, Clone, Default)]
pub struct ZeroCopy(Arc<Mutex<VecDeque<Span>>>);

impl ZeroCopy {
    fn spans(&self) -> MutexGuard<'_, VecDeque<Span>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// A body chunk standing for `len` bytes of `file` from `offset`.
    fn marker(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        assert!(len > 0 && len <= SPAN_MAX, "a span is 1..=SPAN_MAX bytes");
        self.spans().push_back(Span {
            file,
            offset,
            remaining: len,
        });
        Bytes::from_static(&MARKER[..len])
    }
}

/// Whether `buffer` is (part of) a marker.
fn is_marker(buffer: &[u8]) -> bool {
    let start = MARKER.as_ptr() as usize;
    let at = buffer.as_ptr() as usize;
    !buffer.is_empty() && at >= start && at < start + SPAN_MAX
}

/// A client connection whose marker writes are sent from files.
#[derive(Debug)]
pub struct ZeroCopyStream {
    tcp: TcpStream,
    zero_copy: ZeroCopy,
}

impl ZeroCopyStream {
    /// `tcp`, sending the spans queued on the returned [`ZeroCopy`].
    pub fn new(tcp: TcpStream) -> (ZeroCopyStream, ZeroCopy) {
        let zero_copy = ZeroCopy::default();
        let stream = ZeroCopyStream {
            tcp,
            zero_copy: zero_copy.clone(),
        };
        (stream, zero_copy)
    }

    /// Sends bytes of the first span, for a marker of `len` bytes.
    fn poll_send_span(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<usize>> {
        let mut spans = self.zero_copy.spans();
        let Some(span) = spans.front_mut() else {
            return Poll::Ready(Err(io::Error::other("zero-copy: a marker with no span")));
        };
        if span.remaining != len {
            return Poll::Ready(Err(io::Error::other("zero-copy: a marker and its span disagree")));
        }
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let socket = self.tcp.as_raw_fd();
            let sent = self.tcp.try_io(Interest::WRITABLE, || match send_file(socket, span) {
                // A file system that cannot splice (some FUSE and shared
                // folders): the span's bytes are read and written instead.
                Err(error) if cannot_send_file(&error) => copy_file(socket, span),
                other => other,
            });
            match sent {
                Ok(0) => {
                    // The file is shorter than when the span was made.
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file was truncated while it was sent",
                    )));
                }
                Ok(sent) => {
                    span.offset += sent as u64;
                    span.remaining -= sent;
                    if span.remaining == 0 {
                        spans.pop_front();
                    }
                    return Poll::Ready(Ok(sent));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

/// One `sendfile` of `span` to `socket`; the bytes sent.
fn send_file(socket: std::os::fd::RawFd, span: &Span) -> io::Result<usize> {
    let mut offset = libc::off_t::try_from(span.offset).map_err(io::Error::other)?;
    // SAFETY: both descriptors are open for the call (the span holds the
    // file, the stream its socket) and `offset` lives on this frame.
    let sent = unsafe { libc::sendfile(socket, span.file.as_raw_fd(), &mut offset, span.remaining) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// Whether `sendfile` refused because of the file's file system (not the
/// socket): the bytes can still go by a read and a write.
fn cannot_send_file(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// Bytes sent of `span` by a read and one non-blocking write to `socket`
/// (at most 256 KiB; the rest on the next call).
fn copy_file(socket: std::os::fd::RawFd, span: &Span) -> io::Result<usize> {
    let mut bytes = vec![0_u8; span.remaining.min(256 << 10)];
    let read = span.file.read_at(&mut bytes, span.offset)?;
    if read == 0 {
        return Ok(0);
    }
    // SAFETY: the socket is open for the call and `bytes[..read]` is
    // initialised memory on this frame.
    let sent = unsafe { libc::write(socket, bytes.as_ptr().cast(), read) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

impl AsyncRead for ZeroCopyStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopyStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_marker(buf) {
            this.poll_send_span(cx, buf.len())
        } else {
            Pin::new(&mut this.tcp).poll_write(cx, buf)
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // The plain buffers before the first marker go in one writev; a
        // marker first goes by sendfile. hyper calls again for the rest.
        let plain = bufs.iter().take_while(|buf| !is_marker(buf)).count();
        if bufs[..plain].iter().any(|buf| !buf.is_empty()) {
            return Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[..plain]);
        }
        match bufs.get(plain) {
            Some(marker) => this.poll_send_span(cx, marker.len()),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Checks bytes of a file before they go (the store's check of an
/// in-place file against its blob).
pub trait RangeCheck: Send + Sync {
    /// Whether bytes `from..to` were found good before; never blocks.
    fn is_checked(&self, from: u64, to: u64) -> bool;
    /// Checks bytes `from..to` of `file`, reading what was not checked
    /// before; blocking. A file that no longer holds the bytes it was
    /// indexed with fails with `InvalidData`.
    fn check(&self, file: &File, from: u64, to: u64) -> io::Result<()>;
}

/// Bytes `start..start + length` of `file` as a body, in spans of at most
/// [`SPAN_MAX`]: sent by `sendfile` on a [`ZeroCopy`] connection, read
/// otherwise. `check` runs before each span goes (on a blocking thread
/// unless the span was checked before); a failed check (or read) ends the
/// body with an error, which cuts the connection, so a client never takes
/// wrong bytes for right ones.
pub fn file_body(
    file: Arc<File>,
    start: u64,
    length: u64,
    zero_copy: Option<ZeroCopy>,
    check: Option<Arc<dyn RangeCheck>>,
) -> Body {
    let end = start + length;
    let spans = futures_util::stream::unfold(start, move |from| {
        let (file, zero_copy, check) = (file.clone(), zero_copy.clone(), check.clone());
        async move {
            if from >= end {
                return None;
            }
            // At most SPAN_MAX, so the cast cannot truncate.
            let len = (end - from).min(SPAN_MAX as u64) as usize;
            let to = from + len as u64;
            if let Some(zero_copy) = &zero_copy
                && check.as_ref().is_none_or(|check| check.is_checked(from, to))
            {
                // Checked before: no hop to a blocking thread, but the
                // kernel starts reading the span now, so that `sendfile`
                // on an async thread rarely waits for the disk.
                advise_will_need(&file, from, len);
                return Some((Ok(zero_copy.marker(file, from, len)), to));
            }
            let reader = file.clone();
            let chunk = match zero_copy {
                // Checked, then read ahead, so that `sendfile` on an async
                // thread finds the span in the page cache.
                Some(zero_copy) => blocking(move || {
                    check_span(&reader, from, to, check.as_deref())?;
                    advise_will_need(&reader, from, len);
                    Ok(())
                })
                .await
                .map(|()| zero_copy.marker(file, from, len)),
                None => blocking(move || {
                    check_span(&reader, from, to, check.as_deref())?;
                    let mut bytes = vec![0_u8; len];
                    reader.read_exact_at(&mut bytes, from)?;
                    Ok(bytes)
                })
                .await
                .map(Bytes::from),
            };
            Some((chunk, to))
        }
    });
    Body::from_stream(spans)
}

/// `spans` of files (a stored blob's places in hot packs, already checked)
/// as a body sent by `sendfile` on `zero_copy`'s connection.
pub fn spans_body(spans: Vec<omega_storage::FileSpan>, zero_copy: ZeroCopy) -> Body {
    // Pieces of at most SPAN_MAX; each is queued only when hyper polls for
    // it, so a body dropped unsent leaves nothing behind on the connection.
    let pieces = spans.into_iter().flat_map(|span| {
        let end = span.offset + span.len;
        (span.offset..end)
            .step_by(SPAN_MAX)
            .map(move |from| (span.file.clone(), from, (end - from).min(SPAN_MAX as u64) as usize))
    });
    let chunks = futures_util::stream::iter(pieces)
        .map(move |(file, from, len)| Ok::<_, io::Error>(zero_copy.marker(file, from, len)));
    Body::from_stream(chunks)
}

/// Runs `check` on bytes `from..to` of `file`, if there is one.
fn check_span(file: &File, from: u64, to: u64, check: Option<&dyn RangeCheck>) -> io::Result<()> {
    check.map_or(Ok(()), |check| check.check(file, from, to))
}

/// `work` on a blocking thread; a panic there is an error here.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|error| Err(io::Error::other(error.to_string())))
}

/// Asks the kernel to start reading `len` bytes of `file` at `from` into
/// the page cache (it does not wait for them).
fn advise_will_need(file: &File, from: u64, len: usize) {
    if let (Ok(offset), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(len)) {
        // SAFETY: the descriptor is open for the call; the advice only
        // starts reads, so its result does not matter.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_system_without_sendfile_gets_a_read_and_a_write() {
        use std::io::{Read, Write};
        assert!(cannot_send_file(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(!cannot_send_file(&io::Error::from_raw_os_error(libc::EPIPE)));
        let mut file = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..300_000_u32).map(|index| (index % 251) as u8).collect();
        file.write_all(&bytes).unwrap();
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut span = Span {
            file: Arc::new(file),
            offset: 1_000,
            remaining: 299_000,
        };
        let reader = std::thread::spawn(move || {
            let mut received = Vec::new();
            let mut theirs = theirs;
            theirs.read_to_end(&mut received).unwrap();
            received
        });
        while span.remaining > 0 {
            let sent = copy_file(ours.as_raw_fd(), &span).unwrap();
            assert!(sent > 0 && sent <= 256 << 10);
            span.offset += sent as u64;
            span.remaining -= sent;
        }
        ours.flush().unwrap();
        drop(ours);
        assert!(reader.join().unwrap() == bytes[1_000..], "the copied bytes differ");
    }

    #[test]
    fn only_buffers_inside_the_marker_are_markers() {
        assert!(is_marker(&MARKER[..1]));
        assert!(is_marker(&MARKER[SPAN_MAX - 10..]));
        assert!(!is_marker(&MARKER[..0]));
        let copy = MARKER[..16].to_vec();
        assert!(!is_marker(&copy), "a copy of marker bytes is plain bytes");
    }
}
