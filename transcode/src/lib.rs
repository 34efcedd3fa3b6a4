//! Omega's transcoding: everything between a media file and the HLS a
//! player can play. It knows nothing of Raft, libp2p or HTTP; the node
//! wires it to its routes, its store and its job queue.
//!
//! - [`audio`]: audio re-encoded on the fly (MP3, Opus) to a pipe.
//! - [`probe`]: ffprobe's JSON as typed structs.
//! - [`decision`]: direct play, remux or transcode for a client.
//! - [`ladder`]: the renditions derived from a source.
//! - [`segments`]: segment boundaries computed from the source alone, so
//!   every node cuts the same segments.
//! - [`ffmpeg`]: command building and hardware encoder detection.
//! - [`offline`]: whole-file transcodes for the job queue.
//! - [`playlist`]: master and variant playlists.
//! - [`session`]: on-demand ffmpeg sessions that produce segments, bounded
//!   in number, restarted on far seeks, stopped when idle.
//! - [`subtitles`]: text subtitles as WebVTT.

pub mod audio;
pub mod budget;
pub mod decision;
pub mod error;
pub mod ffmpeg;
pub mod ladder;
pub mod offline;
pub mod playlist;
pub mod probe;
pub mod segments;
pub mod session;
pub mod subtitles;

pub use error::{Result, TranscodeError};
