//! The piece protocol (`/omega/pieces/1`), on one libp2p stream per
//! fetching worker: the fetcher sends a request naming a blob, an optional
//! grant and up to [`MAX_PIECES_PER_REQUEST`] piece hashes; the provider
//! answers each piece in order with a status and, when it has it, the
//! bytes; then the next request. Every length is checked before anything
//! is allocated, so a peer cannot make the other side hold more than one
//! piece.
//!
//! ```text
//! request:  u32 length (big-endian) ‖ postcard(Request)   length ≤ MAX_REQUEST_BYTES
//! answer:   u8 status ‖ u32 length ‖ bytes                 length ≤ MAX_PIECE_BYTES, 0 unless status is Ok
//! ```

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// The protocol's name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/omega/pieces/1");
/// Most pieces one request may name.
pub const MAX_PIECES_PER_REQUEST: usize = 64;
/// Largest request frame.
pub const MAX_REQUEST_BYTES: u32 = 8 * 1024;
/// Largest piece (FastCDC's largest maximum chunk size).
pub const MAX_PIECE_BYTES: u32 = 16 * 1024 * 1024;

/// A request for pieces of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The blob the pieces belong to.
    pub blob: [u8; 32],
    /// A grant, for peers that are not members.
    pub grant: Option<String>,
    /// The pieces wanted, by hash.
    pub pieces: Vec<[u8; 32]>,
}

/// How a provider answers one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The bytes follow.
    Ok,
    /// It does not have the piece (or the blob).
    NotFound,
    /// The requester may not have it (no membership, no valid grant).
    Denied,
    /// Over its rate limit: try later or elsewhere.
    Busy,
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::NotFound => 1,
            Status::Denied => 2,
            Status::Busy => 3,
        }
    }

    fn from_code(code: u8) -> Option<Status> {
        Some(match code {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::Denied,
            3 => Status::Busy,
            _ => return None,
        })
    }
}

/// A frame that breaks the protocol.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed or ended early.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The frame is malformed or over a limit.
    #[error("{0}")]
    Malformed(String),
}

/// Writes one request.
pub async fn write_request<W: AsyncWrite + Unpin>(writer: &mut W, request: &Request) -> Result<(), WireError> {
    if request.pieces.is_empty() || request.pieces.len() > MAX_PIECES_PER_REQUEST {
        return Err(WireError::Malformed(format!(
            "a request names 1 to {MAX_PIECES_PER_REQUEST} pieces, not {}",
            request.pieces.len()
        )));
    }
    let body = postcard::to_stdvec(request).map_err(|error| WireError::Malformed(error.to_string()))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|len| *len <= MAX_REQUEST_BYTES)
        .ok_or_else(|| WireError::Malformed(format!("a request of {} bytes is too large", body.len())))?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(&body).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one request; `None` when the fetcher closed the stream cleanly.
pub async fn read_request<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Request>, WireError> {
    let mut len = [0_u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let len = u32::from_be_bytes(len);
    if len == 0 || len > MAX_REQUEST_BYTES {
        return Err(WireError::Malformed(format!("request length {len} is out of bounds")));
    }
    let mut body = vec![0_u8; len as usize];
    reader.read_exact(&mut body).await?;
    let request: Request = postcard::from_bytes(&body).map_err(|error| WireError::Malformed(error.to_string()))?;
    if request.pieces.is_empty() || request.pieces.len() > MAX_PIECES_PER_REQUEST {
        return Err(WireError::Malformed(format!(
            "a request names 1 to {MAX_PIECES_PER_REQUEST} pieces, not {}",
            request.pieces.len()
        )));
    }
    Ok(Some(request))
}

/// Writes one piece's answer (`bytes` only with [`Status::Ok`]).
pub async fn write_piece<W: AsyncWrite + Unpin>(writer: &mut W, status: Status, bytes: &[u8]) -> Result<(), WireError> {
    let bytes = if status == Status::Ok { bytes } else { &[] };
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len <= MAX_PIECE_BYTES)
        .ok_or_else(|| WireError::Malformed(format!("a piece of {} bytes is too large", bytes.len())))?;
    let mut head = [0_u8; 5];
    head[0] = status.code();
    head[1..].copy_from_slice(&len.to_be_bytes());
    writer.write_all(&head).await?;
    writer.write_all(bytes).await?;
    Ok(())
}

/// Reads one piece's answer; a piece longer than `expected_len` is refused
/// before its bytes are read.
pub async fn read_piece<R: AsyncRead + Unpin>(
    reader: &mut R,
    expected_len: u32,
) -> Result<(Status, Vec<u8>), WireError> {
    let mut head = [0_u8; 5];
    reader.read_exact(&mut head).await?;
    let status =
        Status::from_code(head[0]).ok_or_else(|| WireError::Malformed(format!("unknown status {}", head[0])))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if status != Status::Ok && len != 0 {
        return Err(WireError::Malformed(format!("a {status:?} answer carries {len} bytes")));
    }
    if len > expected_len.min(MAX_PIECE_BYTES) {
        return Err(WireError::Malformed(format!(
            "a piece of {len} bytes where {expected_len} were expected"
        )));
    }
    let mut bytes = vec![0_u8; len as usize];
    reader.read_exact(&mut bytes).await?;
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use futures::executor::block_on;
    use futures::io::Cursor;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn requests_and_pieces_round_trip(
            blob in any::<[u8; 32]>(),
            grant in proptest::option::of("[a-zA-Z0-9_]{0,300}"),
            pieces in proptest::collection::vec(any::<[u8; 32]>(), 1..=MAX_PIECES_PER_REQUEST),
            bytes in proptest::collection::vec(any::<u8>(), 0..5000),
        ) {
            let request = Request { blob, grant, pieces };
            let mut buffer = Vec::new();
            block_on(write_request(&mut buffer, &request)).unwrap();
            block_on(write_piece(&mut buffer, Status::Ok, &bytes)).unwrap();
            block_on(write_piece(&mut buffer, Status::Denied, &bytes)).unwrap();
            let mut reader = Cursor::new(buffer);
            prop_assert_eq!(block_on(read_request(&mut reader)).unwrap(), Some(request));
            let (status, read) = block_on(read_piece(&mut reader, 5000)).unwrap();
            prop_assert_eq!((status, read), (Status::Ok, bytes));
            let (status, read) = block_on(read_piece(&mut reader, 5000)).unwrap();
            prop_assert_eq!((status, read.len()), (Status::Denied, 0));
            prop_assert_eq!(block_on(read_request(&mut reader)).unwrap(), None);
        }

        #[test]
        fn arbitrary_bytes_never_panic_or_allocate_past_the_limits(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut reader = Cursor::new(bytes.clone());
            let _ = block_on(read_request(&mut reader));
            let mut reader = Cursor::new(bytes);
            let _ = block_on(read_piece(&mut reader, 64));
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_they_are_read() {
        let mut huge = (MAX_REQUEST_BYTES + 1).to_be_bytes().to_vec();
        huge.extend([0; 16]);
        assert!(matches!(
            block_on(read_request(&mut Cursor::new(huge))),
            Err(WireError::Malformed(_))
        ));
        let mut piece = vec![0_u8];
        piece.extend(1000_u32.to_be_bytes());
        assert!(matches!(
            block_on(read_piece(&mut Cursor::new(piece), 999)),
            Err(WireError::Malformed(_))
        ));
        let too_many = Request {
            blob: [0; 32],
            grant: None,
            pieces: vec![[0; 32]; MAX_PIECES_PER_REQUEST + 1],
        };
        assert!(block_on(write_request(&mut Vec::new(), &too_many)).is_err());
    }
}
